-- Claim up to ARGV[2] pending jobs for node ARGV[1], in queue order, in one atomic step: pop, mark
-- running, assign, start a lease and bump the fencing token (attempt). Never pop-then-write.
-- KEYS[1] queue ZSET, KEYS[2] running ZSET (score = lease deadline ms)
-- ARGV[1] node id, ARGV[2] max jobs, ARGV[3] lease ms, ARGV[4] now (RFC 3339), ARGV[5] job key prefix,
-- ARGV[6] events channel
-- Returns the claimed job records (JSON strings).
local queue, running = KEYS[1], KEYS[2]
local node, max_jobs, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now_iso, prefix, channel = ARGV[4], ARGV[5], ARGV[6]
local claimed = {}
if max_jobs < 1 then return claimed end
local deadline = now_ms() + lease
local popped = redis.call('ZPOPMIN', queue, max_jobs)
for i = 1, #popped, 2 do
  local id = popped[i]
  local key = prefix .. id
  local record = redis.call('GET', key)
  if record then
    local h, rest = parse_header(record)
    -- Anything but a pending job in the queue is a leftover (cancelled, expired): dropping it is right.
    if h and tok_str(h.status) == 'pending' then
      local attempt = tonumber(h.attempt) + 1
      h.status = '"running"'
      h.attempt = string.format('%d', attempt)
      h.assigned_to = jstr(node)
      h.started_at = jstr(now_iso)
      h.completed_at = 'null'
      h.error = 'null'
      record = format_header(h, rest)
      redis.call('SET', key, record)
      redis.call('ZADD', running, deadline, id)
      redis.call('PUBLISH', channel, event('job.started', now_iso, id, node, 'running', attempt))
      claimed[#claimed + 1] = record
    end
  end
end
return claimed
