-- Helpers of the schedule scripts (secauto/store/schedules.py), prepended after lib.lua to every
-- schedule_*.lua script.

-- Where new jobs go, as submit.lua stores them. `jk` holds the key names and settings the caller passed.
local function job_keys(queue, sequence, capacity, rr, index, prefix, node_prefix, placement, index_ms, channel)
  return {queue = queue, sequence = sequence, capacity = capacity, rr = rr, index = index, prefix = prefix,
          node_prefix = node_prefix, placement = placement, index_ms = tonumber(index_ms), channel = channel}
end

-- Store one new pending job exactly as submit.lua does (header kept, enqueued now, round-robin target,
-- indexed, queued by priority, job.submitted published). Returns false when the job key already exists
-- (a slot's job id is derived from the slot: a second attempt at the same slot stores nothing).
local function store_new_job(jk, id, record, announcement, now)
  local key = jk.prefix .. id
  if redis.call('EXISTS', key) == 1 then return false end
  local h, rest = parse_header(record)
  if not h then error('job record ' .. id .. ' has no valid header') end
  redis.call('ZREMRANGEBYSCORE', jk.index, '-inf', (now - jk.index_ms) * 1000)
  h.enqueued_at = string.format('%d', now)
  if jk.placement == 'round_robin' then
    local targets = {}
    for _, name in ipairs(redis.call('HKEYS', jk.capacity)) do
      if redis.call('EXISTS', jk.node_prefix .. name) == 1 then targets[#targets + 1] = name end
    end
    table.sort(targets)
    if #targets > 0 then h.target = jstr(targets[(redis.call('INCR', jk.rr) - 1) % #targets + 1]) end
  end
  redis.call('SET', key, format_header(h, rest))
  local seq = redis.call('INCR', jk.sequence)
  redis.call('ZADD', jk.index, now * 1000 + seq % 1000, id)
  redis.call('ZADD', jk.queue, queue_score(tonumber(h.priority), seq), id)
  redis.call('PUBLISH', jk.channel, announcement)
  return true
end

-- Jobs that count as "still running" for overlap: any status but a final one (waiting, pending,
-- running). Finished or expired ids are pruned from the set. Returns how many remain.
local FINAL = {['"completed"'] = true, ['"failed"'] = true, ['"cancelled"'] = true}
local function active_jobs(set_key, prefix)
  local count = 0
  for _, id in ipairs(redis.call('SMEMBERS', set_key)) do
    local record = redis.call('GET', prefix .. id)
    local h = record and parse_header(record)
    if h and not FINAL[h.status] then count = count + 1 else redis.call('SREM', set_key, id) end
  end
  return count
end

local function track_job(set_key, id, cap)
  if redis.call('SCARD', set_key) < cap then redis.call('SADD', set_key, id) end
end

-- One history entry: {"slot", "outcome", "job_id"[, "until"]}, newest first, capped.
local function push_history(key, cap, slot_iso, outcome, job_id, until_iso)
  local entry = '{"slot":' .. jstr(slot_iso) .. ',"outcome":' .. jstr(outcome) .. ',"job_id":' .. jstr(job_id)
  if until_iso and until_iso ~= '' then entry = entry .. ',"until":' .. jstr(until_iso) end
  redis.call('LPUSH', key, entry .. '}')
  redis.call('LTRIM', key, 0, cap - 1)
end

-- A schedule event in the shape of secauto.models.Event (type first).
local function schedule_event(kind, now_iso, name, slot_iso, job_id, reason)
  local parts = {'{"type":' .. jstr(kind), '"version":1', '"timestamp":' .. jstr(now_iso)}
  if job_id then parts[#parts + 1] = '"job_id":' .. jstr(job_id) end
  if reason then parts[#parts + 1] = '"reason":' .. jstr(reason) end
  parts[#parts + 1] = '"schedule":' .. jstr(name)
  parts[#parts + 1] = '"scheduled_for":' .. jstr(slot_iso)
  return table.concat(parts, ',') .. '}'
end

-- The job of a slot was created: remember it as the schedule's last fire.
local function note_fire(state, id, slot_iso, now_iso)
  redis.call('HSET', state, 'last_job', id, 'last_fire_slot', slot_iso, 'last_fire_at', now_iso)
end
