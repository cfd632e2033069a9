-- Store new jobs and queue them (or park them until due), announcing each; all or nothing per call.
-- With round robin placement each job is given the next active node in turn as its target.
-- Every job is also indexed by submission for listing; index entries older than ARGV[4] ms go.
-- With a quota (ARGV[6] the submitting key's name, ARGV[7] its max_pending), the call is refused whole
-- when the key's live jobs plus the new ones would exceed it; otherwise the new jobs count against it
-- (but for a job cancelled at once, below).
-- A job with dependencies (parent_list) enters them (lib.lua, "Dependencies"): it is stored waiting,
-- pending, or cancelled at once when a dependency already failed and its policy is cancel. Its
-- dependencies are jobs of this call that come before it, or jobs that have a record; otherwise, or
-- when a dependency would get more than ARGV[9] dependents, nothing at all is stored.
-- KEYS[1] queue ZSET, KEYS[2] sequence counter, KEYS[3] delayed ZSET, KEYS[4] capacity HASH,
-- KEYS[5] round-robin counter, KEYS[6] job index ZSET, KEYS[7] quota pending HASH, KEYS[8] quota owner
-- HASH, KEYS[8+i] job key of job i
-- ARGV[1] events channel, ARGV[2] node key prefix, ARGV[3] placement (least_loaded | round_robin),
-- ARGV[4] index retention ms, ARGV[5] control channel (one wake-up per call), ARGV[6] quota key name or
-- '', ARGV[7] its max_pending, ARGV[8] now (RFC 3339), ARGV[9] max dependents per job,
-- then per job i: ARGV[10+4(i-1)] job id, [+1] job JSON, [+2] event JSON, [+3] delay in ms (0: now)
-- Returns the number of jobs stored (a job whose key already exists is left untouched), the error
-- "QUOTA_EXCEEDED <live jobs> <max_pending>", or {'unknown_dependency', id...} /
-- {'too_many_dependents', id...} (nothing stored).
local queue, sequence, delayed, capacity_key, rr_key, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local quota_pending, quota_owner, quota_name = KEYS[7], KEYS[8], ARGV[6]
local FIRST_JOB_KEY, FIRST_JOB_ARG = 8, 10
local channel, node_prefix, placement = ARGV[1], ARGV[2], ARGV[3]
local now_iso, max_dependents = ARGV[8], tonumber(ARGV[9])
local count = #KEYS - FIRST_JOB_KEY
if quota_name ~= '' then
  local live = tonumber(redis.call('HGET', quota_pending, quota_name) or '0')
  local new = 0
  for i = 1, count do
    if redis.call('EXISTS', KEYS[FIRST_JOB_KEY + i]) == 0 then new = new + 1 end
  end
  if live + new > tonumber(ARGV[7]) then
    return redis.error_reply(string.format('QUOTA_EXCEEDED %d %d', live, tonumber(ARGV[7])))
  end
end
local now = now_ms()

-- Check everything before writing anything.
local deps = nil  -- the dependency library, built once a job of this call has dependencies
local headers, rests, position = {}, {}, {}
for i = 1, count do position[ARGV[FIRST_JOB_ARG + 4 * (i - 1)]] = i end
local added, parents_seen, unknown = {}, {}, {}
for i = 1, count do
  local base = FIRST_JOB_ARG + 4 * (i - 1)
  local h, rest = parse_header(ARGV[base + 1])
  if not h then return redis.error_reply('ERR job record ' .. ARGV[base] .. ' has no valid header') end
  headers[i], rests[i] = h, rest
  if h.parent_list ~= 'null' and redis.call('EXISTS', KEYS[FIRST_JOB_KEY + i]) == 0 then
    deps = deps or dependency_library(dependency_settings())
    for _, parent in ipairs(deps.split_list(h.parent_list)) do
      local at = position[parent]
      if at then
        if at >= i then
          return redis.error_reply('ERR job ' .. ARGV[base] .. ' comes before its dependency ' .. parent)
        end
      elseif not added[parent] and redis.call('EXISTS', deps.D.job .. parent) == 0 then
        unknown[#unknown + 1] = parent
      end
      if not added[parent] then
        added[parent] = 0
        parents_seen[#parents_seen + 1] = parent
      end
      added[parent] = added[parent] + 1
    end
  end
end
if #unknown > 0 then return {'unknown_dependency', unpack(unknown)} end
local crowded = {}
for _, parent in ipairs(parents_seen) do
  if redis.call('LLEN', deps.D.dependents .. parent) + added[parent] > max_dependents then
    crowded[#crowded + 1] = parent
  end
end
if #crowded > 0 then return {'too_many_dependents', unpack(crowded)} end

redis.call('ZREMRANGEBYSCORE', index, '-inf', (now - tonumber(ARGV[4])) * 1000)
local targets = nil
if placement == 'round_robin' then
  targets = {}
  for _, name in ipairs(redis.call('HKEYS', capacity_key)) do
    if redis.call('EXISTS', node_prefix .. name) == 1 then targets[#targets + 1] = name end
  end
  table.sort(targets)
end
local known = {}  -- status of the jobs stored by this call, for their dependents later in it
local stored, claimable = 0, 0
for i = 1, count do
  local base = FIRST_JOB_ARG + 4 * (i - 1)
  local id, announcement = ARGV[base], ARGV[base + 2]
  local due = now + tonumber(ARGV[base + 3])
  local h, rest = headers[i], rests[i]
  local key = KEYS[FIRST_JOB_KEY + i]
  if redis.call('EXISTS', key) == 0 then
    h.enqueued_at = string.format('%d', due)  -- while waiting: when it may start once released
    if targets and #targets > 0 then
      h.target = jstr(targets[(redis.call('INCR', rr_key) - 1) % #targets + 1])
    end
    local state, parent, parent_status = 'pending', nil, nil
    if h.parent_list ~= 'null' then state, parent, parent_status = deps.enter_dependencies(id, h, known) end
    known[id] = state
    local seq = redis.call('INCR', sequence)
    redis.call('ZADD', index, now * 1000 + seq % 1000, id)
    if state ~= 'pending' then
      announcement = (announcement:gsub('"status":"pending"', '"status":"' .. state .. '"', 1))
    end
    if state == 'cancelled' then
      redis.call('PUBLISH', channel, announcement)
      deps.cancel_for_dependency(key, id, h, rest, parent, parent_status, now_iso, false)
    else
      if state == 'waiting' then h.status = '"waiting"' end
      redis.call('SET', key, format_header(h, rest))
      if quota_name ~= '' then
        redis.call('HSET', quota_owner, id, quota_name)
        redis.call('HINCRBY', quota_pending, quota_name, 1)
      end
      if state == 'pending' then
        if due > now then
          redis.call('ZADD', delayed, due, id)
        else
          redis.call('ZADD', queue, queue_score(tonumber(h.priority), seq), id)
        end
        claimable = claimable + 1
      end
      redis.call('PUBLISH', channel, announcement)
    end
    stored = stored + 1
  end
end
if claimable > 0 then redis.call('PUBLISH', ARGV[5], WAKE) end
return stored
