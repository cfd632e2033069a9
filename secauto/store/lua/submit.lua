-- Store new jobs and queue them (or park them until due), announcing each; all or nothing per job.
-- With round robin placement each job is given the next active node in turn as its target.
-- Every job is also indexed by submission for listing; index entries older than ARGV[4] ms go.
-- With a quota (ARGV[6] the submitting key's name, ARGV[7] its max_pending), the call is refused whole
-- when the key's live jobs plus the new ones would exceed it; otherwise the new jobs count against it.
-- KEYS[1] queue ZSET, KEYS[2] sequence counter, KEYS[3] delayed ZSET, KEYS[4] capacity HASH,
-- KEYS[5] round-robin counter, KEYS[6] job index ZSET, KEYS[7] quota pending HASH, KEYS[8] quota owner
-- HASH, KEYS[8+i] job key of job i
-- ARGV[1] events channel, ARGV[2] node key prefix, ARGV[3] placement (least_loaded | round_robin),
-- ARGV[4] index retention ms, ARGV[5] control channel (one wake-up per call), ARGV[6] quota key name or
-- '', ARGV[7] its max_pending,
-- then per job i: ARGV[8+4(i-1)] job id, [+1] job JSON, [+2] event JSON, [+3] delay in ms (0: now)
-- Returns the number of jobs stored (a job whose key already exists is left untouched), or the error
-- "QUOTA_EXCEEDED <live jobs> <max_pending>" (nothing stored).
local queue, sequence, delayed, capacity_key, rr_key, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local quota_pending, quota_owner, quota_name = KEYS[7], KEYS[8], ARGV[6]
local FIRST_JOB_KEY, FIRST_JOB_ARG = 8, 8
local channel, node_prefix, placement = ARGV[1], ARGV[2], ARGV[3]
if quota_name ~= '' then
  local live = tonumber(redis.call('HGET', quota_pending, quota_name) or '0')
  local new = 0
  for i = 1, #KEYS - FIRST_JOB_KEY do
    if redis.call('EXISTS', KEYS[FIRST_JOB_KEY + i]) == 0 then new = new + 1 end
  end
  if live + new > tonumber(ARGV[7]) then
    return redis.error_reply(string.format('QUOTA_EXCEEDED %d %d', live, tonumber(ARGV[7])))
  end
end
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', index, '-inf', (now - tonumber(ARGV[4])) * 1000)
local targets = nil
if placement == 'round_robin' then
  targets = {}
  for _, name in ipairs(redis.call('HKEYS', capacity_key)) do
    if redis.call('EXISTS', node_prefix .. name) == 1 then targets[#targets + 1] = name end
  end
  table.sort(targets)
end
local stored = 0
for i = 1, #KEYS - FIRST_JOB_KEY do
  local base = FIRST_JOB_ARG + 4 * (i - 1)
  local id, record, announcement = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local due = now + tonumber(ARGV[base + 3])
  local h, rest = parse_header(record)
  if not h then return redis.error_reply('ERR job record ' .. id .. ' has no valid header') end
  if redis.call('EXISTS', KEYS[FIRST_JOB_KEY + i]) == 0 then
    h.enqueued_at = string.format('%d', due)
    if targets and #targets > 0 then
      h.target = jstr(targets[(redis.call('INCR', rr_key) - 1) % #targets + 1])
    end
    redis.call('SET', KEYS[FIRST_JOB_KEY + i], format_header(h, rest))
    if quota_name ~= '' then
      redis.call('HSET', quota_owner, id, quota_name)
      redis.call('HINCRBY', quota_pending, quota_name, 1)
    end
    local seq = redis.call('INCR', sequence)
    redis.call('ZADD', index, now * 1000 + seq % 1000, id)
    if due > now then
      redis.call('ZADD', delayed, due, id)
    else
      redis.call('ZADD', queue, queue_score(tonumber(h.priority), seq), id)
    end
    redis.call('PUBLISH', channel, announcement)
    stored = stored + 1
  end
end
if stored > 0 then redis.call('PUBLISH', ARGV[5], WAKE) end
return stored
