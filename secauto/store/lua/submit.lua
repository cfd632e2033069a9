-- Store new jobs and queue them (or park them until due), announcing each; all or nothing per job.
-- KEYS[1] queue ZSET, KEYS[2] sequence counter, KEYS[3] delayed ZSET, KEYS[3+i] job key of job i
-- ARGV[1] events channel, then per job i: ARGV[2+4(i-1)] job id, [+1] job JSON, [+2] event JSON,
-- [+3] due time in ms (0: now)
-- Returns the number of jobs stored (a job whose key already exists is left untouched).
local queue, sequence, delayed, channel = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local now = now_ms()
local stored = 0
for i = 1, #KEYS - 3 do
  local base = 2 + 4 * (i - 1)
  local id, record, announcement, due = ARGV[base], ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3])
  local h = parse_header(record)
  if not h then return redis.error_reply('ERR job record ' .. id .. ' has no valid header') end
  if redis.call('SET', KEYS[3 + i], record, 'NX') then
    if due > now then
      redis.call('ZADD', delayed, due, id)
    else
      redis.call('ZADD', queue, queue_score(tonumber(h.priority), redis.call('INCR', sequence)), id)
    end
    redis.call('PUBLISH', channel, announcement)
    stored = stored + 1
  end
end
return stored
