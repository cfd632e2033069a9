-- Record the end of an attempt, fenced: only the node holding the current attempt may write.
-- KEYS[1] job key, KEYS[2] running ZSET
-- ARGV[1] job id, ARGV[2] node id, ARGV[3] attempt (fencing token), ARGV[4] final job JSON,
-- ARGV[5] retention seconds, ARGV[6] events channel, ARGV[7] event JSON
-- Returns 1 when written, 0 when the writer is stale (job re-assigned, cancelled or gone).
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local h = parse_header(current)
if not h or tok_str(h.status) ~= 'running' or tonumber(h.attempt) ~= tonumber(ARGV[3])
    or tok_str(h.assigned_to) ~= ARGV[2] then
  return 0
end
if not parse_header(ARGV[4]) then return redis.error_reply('ERR final record has no valid header') end
redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
