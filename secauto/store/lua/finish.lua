-- End an attempt, fenced: only the node holding the current attempt may write. The caller sends the
-- job's new record and what to do with it:
--   completed  keep the record for the retention period
--   retry      back to the queue after a backoff of ARGV[9] ms (delayed set), preferring another node
--              than this one until ARGV[14] ms after that
--   dead       failed for good: keep it in the dead-letter set (capped) for the DLQ retention
-- KEYS[1] job key, KEYS[2] running ZSET, KEYS[3] queue ZSET, KEYS[4] sequence, KEYS[5] delayed ZSET,
-- KEYS[6] dlq ZSET, KEYS[7] load HASH, KEYS[8] tag HASH
-- ARGV[1] job id, ARGV[2] node id, ARGV[3] attempt (fencing token), ARGV[4] new record JSON,
-- ARGV[5] outcome, ARGV[6] retention s, ARGV[7] events channel, ARGV[8] event JSON,
-- ARGV[9] backoff ms (retry), ARGV[10] DLQ cap, ARGV[11] DLQ retention s, ARGV[12] second event JSON or '',
-- ARGV[13] job key prefix (to delete records trimmed out of the DLQ), ARGV[14] avoid window ms (retry),
-- ARGV[15] the attempt's run time in ms, ARGV[16] cap of the recent-ends list, ARGV[17] control channel
-- ARGV[18] now (RFC 3339)
-- KEYS[9] recent-ends LIST ("end_ms status node duration_ms", newest first), KEYS[10] quota pending
-- HASH, KEYS[11] quota owner HASH (completed and dead release the job's quota)
-- A job that ends for good (completed, dead) settles its dependents here, in the same step (lib.lua,
-- "Dependencies"); a retry settles nothing: its dependents wait for its final outcome.
-- Returns 1 when written, 0 when the writer is stale (job re-assigned, cancelled or gone).
local job_key, running, queue, sequence, delayed, dlq = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, outcome = ARGV[1], ARGV[5]
local current = redis.call('GET', job_key)
if not current then return 0 end
local h = parse_header(current)
if not h or tok_str(h.status) ~= 'running' or tonumber(h.attempt) ~= tonumber(ARGV[3])
    or tok_str(h.assigned_to) ~= ARGV[2] then
  return 0
end
local new, new_rest = parse_header(ARGV[4])
if not new then return redis.error_reply('ERR new record has no valid header') end
local now = now_ms()
redis.call('ZREM', running, id)
release_slot(h, KEYS[7], KEYS[8])
redis.call('LPUSH', KEYS[9], string.format('%d %s %s %d', now, outcome == 'completed' and 'completed' or 'failed',
                                          ARGV[2], tonumber(ARGV[15])))
redis.call('LTRIM', KEYS[9], 0, tonumber(ARGV[16]) - 1)
if outcome ~= 'retry' then release_quota(id, KEYS[11], KEYS[10]) end
if outcome == 'completed' then
  redis.call('SET', job_key, ARGV[4], 'EX', ARGV[6])
elseif outcome == 'retry' then
  -- Times come from the Redis clock, the one every claim compares them with.
  local due = now + tonumber(ARGV[9])
  new.avoid_node = jstr(ARGV[2])
  new.avoid_until = string.format('%d', due + tonumber(ARGV[14]))
  new.enqueued_at = string.format('%d', due)
  redis.call('SET', job_key, format_header(new, new_rest))
  if due > now then
    redis.call('ZADD', delayed, due, id)
  else
    redis.call('ZADD', queue, queue_score(tonumber(new.priority), redis.call('INCR', sequence)), id)
  end
  redis.call('PUBLISH', ARGV[17], WAKE)
elseif outcome == 'dead' then
  redis.call('SET', job_key, ARGV[4], 'EX', ARGV[11])
  expire_dead(dlq, now, ARGV[11])
  redis.call('ZADD', dlq, now, id)
  for _, old in ipairs(trim_oldest(dlq, tonumber(ARGV[10]))) do redis.call('DEL', ARGV[13] .. old) end
else
  return redis.error_reply('ERR unknown outcome ' .. outcome)
end
redis.call('PUBLISH', ARGV[7], ARGV[8])
if ARGV[12] ~= '' then redis.call('PUBLISH', ARGV[7], ARGV[12]) end
if outcome ~= 'retry' then
  -- Most jobs have neither dependencies nor dependents: this costs them one EXISTS.
  local D = dependency_settings()
  if h.parent_list ~= 'null' or redis.call('EXISTS', D.dependents .. id) == 1 then
    dependency_library(D).job_ended(id, h, outcome == 'completed' and 'completed' or 'failed', now, ARGV[18])
  end
end
return 1
