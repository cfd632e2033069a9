-- Put a failed or cancelled job back in the queue (DLQ requeue, or retry on request) with a fresh
-- retry budget. Its attempt history is kept; the next claim gets a new fencing token as always.
-- A job with dependencies enters them again, as at submission (lib.lua, "Dependencies"): it waits for
-- those that have not ended, and is cancelled again at once if one failed and its policy is cancel.
-- KEYS[1] job key, KEYS[2] queue ZSET, KEYS[3] sequence, KEYS[4] dlq ZSET
-- ARGV[1] job id, ARGV[2] now (RFC 3339), ARGV[3] events channel, ARGV[4] '1' to act only on a job in
-- the DLQ, ARGV[5] control channel
-- Returns {status before, status after}: before is '' when there is no such job, 'not_dead' when
-- ARGV[4] is '1' and the job is not in the DLQ; after is '' when nothing changed (only failed and
-- cancelled jobs change), else pending, waiting or cancelled.
local key, queue, sequence, dlq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, now_iso, channel = ARGV[1], ARGV[2], ARGV[3]
local record = redis.call('GET', key)
if not record then return {'', ''} end
if ARGV[4] == '1' and not redis.call('ZSCORE', dlq, id) then return {'not_dead', ''} end
local h, rest = parse_header(record)
if not h then return redis.error_reply('ERR job record has no valid header') end
local status = tok_str(h.status)
if status ~= 'failed' and status ~= 'cancelled' then return {status, ''} end
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
redis.call('ZREM', dlq, id)
local deps = dependency_library(dependency_settings())
local state, parent, parent_status = 'pending', nil, nil
if h.parent_list ~= 'null' then state, parent, parent_status = deps.enter_dependencies(id, h, {}) end
if state == 'cancelled' then
  deps.cancel_for_dependency(key, id, h, rest, parent, parent_status, now_iso, false)
  return {status, state}
end
-- Live again: no TTL until it ends (its next end keeps the record again if dependents still need it).
redis.call('HDEL', deps.D.pins, id)
if state == 'waiting' then
  h.status = '"waiting"'
  redis.call('SET', key, format_header(h, rest))
else
  redis.call('SET', key, format_header(h, rest))
  redis.call('ZADD', queue, queue_score(tonumber(h.priority), redis.call('INCR', sequence)), id)
  redis.call('PUBLISH', ARGV[5], WAKE)
end
redis.call('PUBLISH', channel, event('job.requeued', now_iso, id, nil, state, tonumber(h.attempt), nil, status))
return {status, state}
