-- A node stopping gracefully gives back the jobs it could not finish. Not a failed attempt: the
-- retry count is unchanged and the job goes to the front of its priority band.
-- KEYS[1] running ZSET, KEYS[2] queue ZSET, KEYS[3] load HASH, KEYS[4] tag HASH
-- ARGV[1] node id, ARGV[2] job key prefix, ARGV[3] events channel, ARGV[4] now (RFC 3339),
-- ARGV[5] control channel, then pairs (job id, attempt)
-- Returns the number of jobs handed back (stale pairs are skipped).
local running, queue = KEYS[1], KEYS[2]
local node, prefix, channel, now_iso = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local count = 0
for i = 6, #ARGV, 2 do
  local id, attempt = ARGV[i], tonumber(ARGV[i + 1])
  local key = prefix .. id
  local record = redis.call('GET', key)
  local h, rest
  if record then h, rest = parse_header(record) end
  if h and tok_str(h.status) == 'running' and tonumber(h.attempt) == attempt and tok_str(h.assigned_to) == node then
    rest = append_attempt(rest, attempt_entry(attempt, node, tok_str(h.started_at), now_iso, 'handed_back', nil))
    release_slot(h, KEYS[3], KEYS[4])
    h.enqueued_at = string.format('%d', now_ms())
    h.status = '"pending"'
    h.assigned_to = 'null'
    redis.call('SET', key, format_header(h, rest))
    redis.call('ZREM', running, id)
    redis.call('ZADD', queue, queue_score(tonumber(h.priority), 0), id)
    redis.call('PUBLISH', channel, event('job.requeued', now_iso, id, node, 'pending', attempt, nil, 'handed_back'))
    count = count + 1
  end
end
if count > 0 then redis.call('PUBLISH', ARGV[5], WAKE) end
return count
