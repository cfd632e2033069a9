-- Overlap buffer_one: once none of the schedule's jobs is active any more, create the job of the slot
-- that was buffered behind them (built by the caller now, so its submitted_at is the real one).
-- Leader-fenced like schedule_fire.lua, and the buffered slot must be the one the caller built the job for.
-- KEYS as schedule_fire.lua. ARGV[1] leader token, ARGV[2] name, ARGV[3] history cap, ARGV[4] active cap,
-- ARGV[5] job key prefix, ARGV[6] node key prefix, ARGV[7] placement, ARGV[8] index retention ms,
-- ARGV[9] events channel, ARGV[10] control channel, ARGV[11] now (RFC 3339), ARGV[12] buffered slot ms,
-- ARGV[13] that slot in RFC 3339, ARGV[14] job id, ARGV[15] job JSON, ARGV[16] job.submitted event JSON
-- Returns -1 not the leader, 0 nothing (or another slot) buffered, 1 still waiting, 2 job created.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local state, name, prefix, channel, now_iso = KEYS[3], ARGV[2], ARGV[5], ARGV[9], ARGV[11]
local buffered = redis.call('HGET', state, 'buffered_slot')
if redis.call('HEXISTS', KEYS[2], name) == 0 or not buffered then
  redis.call('SREM', KEYS[12], name)
  return 0
end
if buffered ~= ARGV[12] then return 0 end
if active_jobs(KEYS[6], prefix) > 0 then return 1 end
local jk = job_keys(KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], prefix, ARGV[6], ARGV[7], ARGV[8], channel)
local slot_iso, id = ARGV[13], ARGV[14]
store_new_job(jk, id, ARGV[15], ARGV[16], now_ms())
track_job(KEYS[6], id, tonumber(ARGV[4]))
note_fire(state, id, slot_iso, now_iso)
push_history(KEYS[5], tonumber(ARGV[3]), slot_iso, 'fired', id, nil)
redis.call('PUBLISH', channel, schedule_event('schedule.fired', now_iso, name, slot_iso, id, nil))
redis.call('HDEL', state, 'buffered_slot')
redis.call('SREM', KEYS[12], name)
redis.call('PUBLISH', ARGV[10], WAKE)
return 2
