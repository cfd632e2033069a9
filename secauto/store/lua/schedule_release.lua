-- Overlap buffer_one: once none of the schedule's jobs is active any more, create the job of the slot
-- that was buffered behind them. Leader-fenced like schedule_fire.lua.
-- KEYS as schedule_fire.lua. ARGV[1] leader token, ARGV[2] name, ARGV[3] history cap, ARGV[4] active cap,
-- ARGV[5] job key prefix, ARGV[6] node key prefix, ARGV[7] placement, ARGV[8] index retention ms,
-- ARGV[9] events channel, ARGV[10] control channel, ARGV[11] now (RFC 3339)
-- Returns -1 not the leader, 0 nothing buffered (name dropped from the set), 1 still waiting, or the
-- new job id.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local state, name, prefix, channel, now_iso = KEYS[3], ARGV[2], ARGV[5], ARGV[9], ARGV[11]
local b = redis.call('HMGET', state, 'buffered_slot', 'buffered_job', 'buffered_record', 'buffered_event')
if redis.call('HEXISTS', KEYS[2], name) == 0 or not b[1] or b[1] == '' then
  redis.call('SREM', KEYS[12], name)
  redis.call('HDEL', state, 'buffered_slot', 'buffered_job', 'buffered_record', 'buffered_event')
  return 0
end
if active_jobs(KEYS[6], prefix) > 0 then return 1 end
local jk = job_keys(KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], prefix, ARGV[6], ARGV[7], ARGV[8], channel)
local slot_iso, id = b[1], b[2]
store_new_job(jk, id, b[3], b[4], now_ms())
track_job(KEYS[6], id, tonumber(ARGV[4]))
note_fire(state, id, slot_iso, now_iso)
push_history(KEYS[5], tonumber(ARGV[3]), slot_iso, 'fired', id, nil)
redis.call('PUBLISH', channel, schedule_event('schedule.fired', now_iso, name, slot_iso, id, nil))
redis.call('HDEL', state, 'buffered_slot', 'buffered_job', 'buffered_record', 'buffered_event')
redis.call('SREM', KEYS[12], name)
redis.call('PUBLISH', ARGV[10], WAKE)
return id
