-- Extend the leases of all the jobs a node runs, in one call; report the ones it no longer owns.
-- KEYS[1] running ZSET
-- ARGV[1] node id, ARGV[2] lease ms, ARGV[3] job key prefix, then pairs (job id, attempt)
-- Returns the ids whose lease could not be renewed (finished, cancelled or taken over elsewhere).
local running, node, lease, prefix = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local deadline = now_ms() + lease
local lost = {}
for i = 4, #ARGV, 2 do
  local id, attempt = ARGV[i], tonumber(ARGV[i + 1])
  local record = redis.call('GET', prefix .. id)
  local h = record and parse_header(record)
  if h and tok_str(h.status) == 'running' and tonumber(h.attempt) == attempt
      and tok_str(h.assigned_to) == node then
    redis.call('ZADD', running, deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
