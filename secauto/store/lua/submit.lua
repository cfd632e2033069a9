-- Store new jobs and queue them (or park them until due), announcing each; all or nothing per job.
-- With round robin placement each job is given the next active node in turn as its target.
-- Every job is also indexed by submission for listing; index entries older than ARGV[4] ms go.
-- KEYS[1] queue ZSET, KEYS[2] sequence counter, KEYS[3] delayed ZSET, KEYS[4] capacity HASH,
-- KEYS[5] round-robin counter, KEYS[6] job index ZSET, KEYS[6+i] job key of job i
-- ARGV[1] events channel, ARGV[2] node key prefix, ARGV[3] placement (least_loaded | round_robin),
-- ARGV[4] index retention ms, ARGV[5] control channel (one wake-up per call),
-- then per job i: ARGV[6+4(i-1)] job id, [+1] job JSON, [+2] event JSON, [+3] delay in ms (0: now)
-- Returns the number of jobs stored (a job whose key already exists is left untouched).
local queue, sequence, delayed, capacity_key, rr_key, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local channel, node_prefix, placement = ARGV[1], ARGV[2], ARGV[3]
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
for i = 1, #KEYS - 6 do
  local base = 6 + 4 * (i - 1)
  local id, record, announcement = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local due = now + tonumber(ARGV[base + 3])
  local h, rest = parse_header(record)
  if not h then return redis.error_reply('ERR job record ' .. id .. ' has no valid header') end
  if redis.call('EXISTS', KEYS[6 + i]) == 0 then
    h.enqueued_at = string.format('%d', due)
    if targets and #targets > 0 then
      h.target = jstr(targets[(redis.call('INCR', rr_key) - 1) % #targets + 1])
    end
    redis.call('SET', KEYS[6 + i], format_header(h, rest))
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
