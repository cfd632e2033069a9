-- The leader handles the due slots of one schedule and moves its pending slot, in one step.
-- Leader-fenced (the lease must hold ARGV[1]) and slot-fenced: the schedule's stored pending slot,
-- definition revision and paused flag must be those the caller planned with; otherwise nothing changes
-- (the caller re-reads and plans again). So each slot is handled once across the cluster, whatever
-- node fires, dies or upserts meanwhile.
-- KEYS[1] leader, KEYS[2] definitions HASH, KEYS[3] state HASH, KEYS[4] due ZSET, KEYS[5] history LIST,
-- KEYS[6] active jobs SET, KEYS[7] queue, KEYS[8] sequence, KEYS[9] capacity HASH, KEYS[10] round-robin,
-- KEYS[11] job index, KEYS[12] buffered SET
-- ARGV[1] leader token, ARGV[2] name, ARGV[3] pending slot ms, ARGV[4] revision, ARGV[5] paused (0|1),
-- ARGV[6] next slot ms, ARGV[7] next due ms, ARGV[8] overlap, ARGV[9] history cap, ARGV[10] active cap,
-- ARGV[11] job key prefix, ARGV[12] node key prefix, ARGV[13] placement, ARGV[14] index retention ms,
-- ARGV[15] events channel, ARGV[16] control channel, ARGV[17] now (RFC 3339), ARGV[18] never (ms),
-- then per slot (7 each, oldest first): slot ms, slot RFC 3339, intent (fire|missed|paused), until RFC 3339
-- or '', job id, job JSON, job.submitted event JSON (the last three '' unless the intent is fire)
-- Returns {-1} not the leader, {0} stale plan, else {1, outcome per slot...} with outcomes fired,
-- skipped_overlap, buffered, missed, paused.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local state, name = KEYS[3], ARGV[2]
local st = redis.call('HMGET', state, 'slot', 'rev', 'paused', 'last_slot', 'buffered_slot')
if redis.call('HEXISTS', KEYS[2], name) == 0 or not st[1] or st[1] ~= ARGV[3] or st[2] ~= ARGV[4]
    or (st[3] or '0') ~= ARGV[5] then
  return {0}
end
local overlap, history_cap, active_cap = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local prefix, channel, now_iso = ARGV[11], ARGV[15], ARGV[17]
local jk = job_keys(KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], prefix, ARGV[12], ARGV[13], ARGV[14], channel)
local now = now_ms()
local last_slot = tonumber(st[4] or '-1')
local buffered = st[5] ~= false and st[5] ~= nil and st[5] ~= ''
local outcomes, created = {1}, false
for base = 19, #ARGV, 7 do
  local slot, slot_iso, intent, until_iso = tonumber(ARGV[base]), ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local id, record, announcement = ARGV[base + 4], ARGV[base + 5], ARGV[base + 6]
  local outcome = intent
  if slot <= last_slot then
    outcome = 'stale'  -- already handled (never happens while the fencing above holds)
  elseif intent == 'fire' then
    outcome = 'fired'
    if overlap ~= 'allow' and active_jobs(KEYS[6], prefix) > 0 then
      if overlap == 'buffer_one' and not buffered then
        redis.call('HSET', state, 'buffered_slot', ARGV[base])
        redis.call('SADD', KEYS[12], name)
        buffered = true
        outcome = 'buffered'
      else
        outcome = 'skipped_overlap'
      end
    end
    if outcome == 'fired' then
      store_new_job(jk, id, record, announcement, now)
      track_job(KEYS[6], id, active_cap)
      note_fire(state, id, slot_iso, now_iso)
      created = true
      push_history(KEYS[5], history_cap, slot_iso, 'fired', id, nil)
      redis.call('PUBLISH', channel, schedule_event('schedule.fired', now_iso, name, slot_iso, id, nil))
    elseif outcome == 'skipped_overlap' then
      push_history(KEYS[5], history_cap, slot_iso, outcome, nil, nil)
      redis.call('PUBLISH', channel, schedule_event('schedule.skipped', now_iso, name, slot_iso, nil, outcome))
    end
  elseif intent == 'missed' then
    push_history(KEYS[5], history_cap, slot_iso, 'missed', nil, until_iso)
    redis.call('PUBLISH', channel, schedule_event('schedule.missed', now_iso, name, slot_iso, nil, nil))
  else
    push_history(KEYS[5], history_cap, slot_iso, 'paused', nil, until_iso)
    redis.call('PUBLISH', channel, schedule_event('schedule.skipped', now_iso, name, slot_iso, nil, 'paused'))
  end
  if slot > last_slot then last_slot = slot end
  outcomes[#outcomes + 1] = outcome
end
redis.call('HSET', state, 'slot', ARGV[6], 'due', ARGV[7], 'last_slot', string.format('%d', last_slot))
if tonumber(ARGV[6]) >= tonumber(ARGV[18]) then
  redis.call('ZREM', KEYS[4], name)
else
  redis.call('ZADD', KEYS[4], ARGV[7], name)
end
if created then redis.call('PUBLISH', ARGV[16], WAKE) end
return outcomes
