-- Put a failed or cancelled job back in the queue (DLQ requeue, or retry on request) with a fresh
-- retry budget. Its attempt history is kept; the next claim gets a new fencing token as always.
-- KEYS[1] job key, KEYS[2] queue ZSET, KEYS[3] sequence, KEYS[4] dlq ZSET
-- ARGV[1] job id, ARGV[2] now (RFC 3339), ARGV[3] events channel, ARGV[4] '1' to act only on a job in
-- the DLQ, ARGV[5] control channel
-- Returns the status before the call ('' when there is no such job, 'not_dead' when ARGV[4] is '1' and
-- the job is not in the DLQ); only failed and cancelled jobs change.
local key, queue, sequence, dlq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, now_iso, channel = ARGV[1], ARGV[2], ARGV[3]
local record = redis.call('GET', key)
if not record then return '' end
if ARGV[4] == '1' and not redis.call('ZSCORE', dlq, id) then return 'not_dead' end
local h, rest = parse_header(record)
if not h then return redis.error_reply('ERR job record has no valid header') end
local status = tok_str(h.status)
if status ~= 'failed' and status ~= 'cancelled' then return status end
h.status = '"pending"'
h.retry_count = '0'
h.node_losses = '0'
h.assigned_to = 'null'
h.completed_at = 'null'
h.error = 'null'
h.reason = 'null'
h.avoid_node = 'null'
h.avoid_until = '0'
h.enqueued_at = string.format('%d', now_ms())
redis.call('SET', key, format_header(h, rest))
redis.call('ZREM', dlq, id)
redis.call('ZADD', queue, queue_score(tonumber(h.priority), redis.call('INCR', sequence)), id)
redis.call('PUBLISH', channel, event('job.requeued', now_iso, id, nil, 'pending', tonumber(h.attempt), nil, status))
redis.call('PUBLISH', ARGV[5], WAKE)
return status
