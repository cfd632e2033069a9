-- Store new jobs, queue them and announce them, all or nothing per job.
-- KEYS[1] queue ZSET, KEYS[2] sequence counter, KEYS[2+i] job key of job i
-- ARGV[1] events channel, then per job i: ARGV[2+3(i-1)] job id, [3+...] job JSON, [4+...] event JSON
-- Returns the number of jobs stored (a job whose key already exists is left untouched).
local queue, sequence, channel = KEYS[1], KEYS[2], ARGV[1]
local stored = 0
for i = 1, #KEYS - 2 do
  local base = 2 + 3 * (i - 1)
  local id, record, announcement = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local h = parse_header(record)
  if not h then return redis.error_reply('ERR job record ' .. id .. ' has no valid header') end
  if redis.call('SET', KEYS[2 + i], record, 'NX') then
    local seq = redis.call('INCR', sequence)
    redis.call('ZADD', queue, queue_score(tonumber(h.priority), seq), id)
    redis.call('PUBLISH', channel, announcement)
    stored = stored + 1
  end
end
return stored
