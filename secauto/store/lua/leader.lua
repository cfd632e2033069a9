-- Acquire or renew the leader lease.
-- KEYS[1] leader key; ARGV[1] token "<node_id>:<random>", ARGV[2] lease ms, ARGV[3] events channel,
-- ARGV[4] leader.changed event JSON (published only on a new acquisition), ARGV[5] control channel
-- Returns 1 acquired, 2 renewed, 0 someone else leads.
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 2
end
if current then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return 1
