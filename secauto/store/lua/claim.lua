-- Claim up to ARGV[2] pending jobs for node ARGV[1], in queue order, in one atomic step: pop, mark
-- running, assign, start a lease and bump the fencing token (attempt). Never pop-then-write.
-- Due delayed jobs are promoted first. A retry that prefers another node (avoid_node) is left for
-- the others until its avoid_until.
-- KEYS[1] queue ZSET, KEYS[2] running ZSET (score = lease deadline ms), KEYS[3] delayed ZSET,
-- KEYS[4] sequence
-- ARGV[1] node id, ARGV[2] max jobs, ARGV[3] lease ms, ARGV[4] now (RFC 3339), ARGV[5] job key prefix,
-- ARGV[6] events channel
-- Returns {claimed job records (JSON strings), ms until the next delayed job is due (-1: none)}.
local queue, running, delayed, sequence = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local node, max_jobs, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now_iso, prefix, channel = ARGV[4], ARGV[5], ARGV[6]
local claimed = {}
local now = now_ms()
local function next_due()
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return math.max(0, tonumber(first[2]) - now)
end
if max_jobs < 1 then return {claimed, next_due()} end
promote_due(delayed, queue, sequence, prefix, now)
local deadline = now + lease
local candidates = redis.call('ZRANGE', queue, 0, math.min(max_jobs * 4 + 16, 1000) - 1)
for _, id in ipairs(candidates) do
  if #claimed >= max_jobs then break end
  local key = prefix .. id
  local record = redis.call('GET', key)
  local h, rest
  if record then h, rest = parse_header(record) end
  if not h or tok_str(h.status) ~= 'pending' then
    -- A leftover (cancelled, expired or unreadable): it does not belong in the queue.
    redis.call('ZREM', queue, id)
  elseif tok_str(h.avoid_node) ~= node or now >= tonumber(h.avoid_until) then
    redis.call('ZREM', queue, id)
    local attempt = tonumber(h.attempt) + 1
    h.status = '"running"'
    h.attempt = string.format('%d', attempt)
    h.assigned_to = jstr(node)
    h.started_at = jstr(now_iso)
    h.completed_at = 'null'
    record = format_header(h, rest)
    redis.call('SET', key, record)
    redis.call('ZADD', running, deadline, id)
    redis.call('PUBLISH', channel, event('job.started', now_iso, id, node, 'running', attempt))
    claimed[#claimed + 1] = record
  end
end
return {claimed, next_due()}
