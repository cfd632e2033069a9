-- Leader only: recover jobs whose lease expired. Fenced by the leader lease token, so a deposed leader
-- changes nothing. A job with retries left goes back to the queue (retry_count + 1, next attempt gets a
-- new fencing token at claim); one without is failed and dead-lettered.
-- KEYS[1] running ZSET, KEYS[2] queue ZSET, KEYS[3] sequence, KEYS[4] dlq ZSET, KEYS[5] leader key
-- ARGV[1] leader token, ARGV[2] job key prefix, ARGV[3] events channel, ARGV[4] now (RFC 3339),
-- ARGV[5] max jobs per call, ARGV[6] retention seconds for failed jobs
-- Returns {requeued, failed} counts, or -1 when this caller is not the leader.
local running, queue, sequence, dlq, leader = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, prefix, channel, now_iso = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit, retention = tonumber(ARGV[5]), ARGV[6]
if redis.call('GET', leader) ~= token then return -1 end
local now = now_ms()
local requeued, failed = 0, 0
local expired = redis.call('ZRANGEBYSCORE', running, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  redis.call('ZREM', running, id)
  local key = prefix .. id
  local record = redis.call('GET', key)
  local h, rest
  if record then h, rest = parse_header(record) end
  if h and tok_str(h.status) == 'running' then
    local lost_on = tok_str(h.assigned_to)
    local retries, max_retries = tonumber(h.retry_count), tonumber(h.max_retries)
    local reason = 'lease expired on node ' .. tostring(lost_on)
    if retries < max_retries then
      h.status = '"pending"'
      h.retry_count = string.format('%d', retries + 1)
      h.assigned_to = 'null'
      h.error = jstr(reason)
      redis.call('SET', key, format_header(h, rest))
      redis.call('ZADD', queue, queue_score(tonumber(h.priority), redis.call('INCR', sequence)), id)
      redis.call('PUBLISH', channel, event('job.retrying', now_iso, id, lost_on, 'pending',
                                            tonumber(h.attempt), reason))
      requeued = requeued + 1
    else
      reason = reason .. '; retries exhausted'
      h.status = '"failed"'
      h.completed_at = jstr(now_iso)
      h.error = jstr(reason)
      redis.call('SET', key, format_header(h, rest), 'EX', retention)
      redis.call('ZADD', dlq, now, id)
      redis.call('PUBLISH', channel, event('job.failed', now_iso, id, lost_on, 'failed',
                                            tonumber(h.attempt), reason))
      failed = failed + 1
    end
  end
end
return {requeued, failed}
