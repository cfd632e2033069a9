-- Run one job of a schedule now, without moving its pending slot (no overlap check: an operator asked).
-- KEYS[1] definitions HASH, KEYS[2] state HASH, KEYS[3] history LIST, KEYS[4] active jobs SET,
-- KEYS[5] queue, KEYS[6] sequence, KEYS[7] capacity HASH, KEYS[8] round-robin, KEYS[9] job index
-- ARGV[1] name, ARGV[2] job id, ARGV[3] job JSON, ARGV[4] job.submitted event JSON, ARGV[5] the trigger
-- time (RFC 3339, the job's scheduled_for), ARGV[6] history cap, ARGV[7] active cap, ARGV[8] job key
-- prefix, ARGV[9] node key prefix, ARGV[10] placement, ARGV[11] index retention ms, ARGV[12] events
-- channel, ARGV[13] control channel, ARGV[14] now (RFC 3339)
-- Returns 1, or 0 for an unknown schedule.
local name = ARGV[1]
if redis.call('HEXISTS', KEYS[1], name) == 0 then return 0 end
local jk = job_keys(KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12])
local id, slot_iso, now_iso = ARGV[2], ARGV[5], ARGV[14]
store_new_job(jk, id, ARGV[3], ARGV[4], now_ms())
track_job(KEYS[4], id, tonumber(ARGV[7]))
note_fire(KEYS[2], id, slot_iso, now_iso)
push_history(KEYS[3], tonumber(ARGV[6]), slot_iso, 'triggered', id, nil)
redis.call('PUBLISH', ARGV[12], schedule_event('schedule.fired', now_iso, name, slot_iso, id, 'triggered'))
redis.call('PUBLISH', ARGV[13], WAKE)
return 1
