-- Cancel a job. Waiting or pending: at once. Running: the record says cancelled at once (so every later
-- write of the running attempt is refused) and job.cancelled names the node, whose executor stops the
-- attempt. Its dependents are settled in the same step (lib.lua, "Dependencies": with the default
-- policy they are cancelled too, and on down).
-- KEYS[1] job key, KEYS[2] queue ZSET, KEYS[3] delayed ZSET, KEYS[4] running ZSET, KEYS[5] load HASH,
-- KEYS[6] tag HASH, KEYS[7] quota pending HASH, KEYS[8] quota owner HASH
-- ARGV[1] job id, ARGV[2] now (RFC 3339), ARGV[3] events channel, ARGV[4] retention s,
-- ARGV[5] control channel (the running node hears about it there)
-- Returns the status before the call ('' when there is no such job); only waiting, pending and running
-- change.
local key, queue, delayed, running = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, now_iso, channel = ARGV[1], ARGV[2], ARGV[3]
local record = redis.call('GET', key)
if not record then return '' end
local h, rest = parse_header(record)
if not h then return redis.error_reply('ERR job record has no valid header') end
local status = tok_str(h.status)
if status ~= 'waiting' and status ~= 'pending' and status ~= 'running' then return status end
local node = tok_str(h.assigned_to)
if status == 'running' then
  release_slot(h, KEYS[5], KEYS[6])
  rest = append_attempt(rest, attempt_entry(tonumber(h.attempt), node, tok_str(h.started_at), now_iso, 'cancelled',
                                            nil))
end
release_quota(id, KEYS[8], KEYS[7])
local deps = dependency_library(dependency_settings())
h.status = '"cancelled"'
h.reason = '"cancelled"'
h.completed_at = jstr(now_iso)
redis.call('SET', key, format_header(h, rest), 'EX', ARGV[4])
redis.call('ZREM', queue, id)
redis.call('ZREM', delayed, id)
redis.call('ZREM', running, id)
if status == 'waiting' then deps.stop_waiting(id) end
local announcement = event('job.cancelled', now_iso, id, node, 'cancelled', tonumber(h.attempt))
redis.call('PUBLISH', channel, announcement)
if status == 'running' then redis.call('PUBLISH', ARGV[5], announcement) end
deps.job_ended(id, h, 'cancelled', now_ms(), now_iso)
return status
