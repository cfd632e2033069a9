-- Pause or resume a schedule. A paused schedule keeps its pending slot moving (the leader records each
-- due slot as paused); resuming moves the pending slot to ARGV[5], the first slot after now, so the
-- paused slots never fire.
-- KEYS[1] definitions HASH, KEYS[2] state HASH, KEYS[3] due ZSET
-- ARGV[1] name, ARGV[2] pause|resume, ARGV[3] now (RFC 3339), ARGV[4] note, ARGV[5] next slot ms,
-- ARGV[6] its due ms, ARGV[7] enabled (1|0), ARGV[8] never (ms)
-- Returns paused, resumed, not_paused (resume of a running schedule: nothing changes), not_found, or
-- stale (the next slot is not after the last slot handled: plan again with a newer time).
local name, state = ARGV[1], KEYS[2]
if redis.call('HEXISTS', KEYS[1], name) == 0 then return 'not_found' end
if ARGV[2] == 'pause' then
  redis.call('HSET', state, 'paused', '1', 'paused_at', ARGV[3], 'pause_note', ARGV[4])
  return 'paused'
end
if redis.call('HGET', state, 'paused') ~= '1' then return 'not_paused' end
local last_slot = redis.call('HGET', state, 'last_slot')
if last_slot and tonumber(ARGV[5]) <= tonumber(last_slot) then return 'stale' end
redis.call('HSET', state, 'paused', '0', 'slot', ARGV[5], 'due', ARGV[6], 'pause_note', ARGV[4])
redis.call('HDEL', state, 'paused_at')
if ARGV[7] == '1' and tonumber(ARGV[5]) < tonumber(ARGV[8]) then
  redis.call('ZADD', KEYS[3], ARGV[6], name)
else
  redis.call('ZREM', KEYS[3], name)
end
return 'resumed'
