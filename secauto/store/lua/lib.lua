-- Shared helpers, prepended to every script by secauto/store/scripts.py.
--
-- A job record is a JSON object whose first fields (the header) are the mutable scalars listed in
-- HEADER, in this order (secauto/models.py: Job). Scripts rewrite the header and keep the rest of the
-- record byte for byte: Redis' cjson cannot round-trip user data (empty lists become objects, large
-- numbers lose digits), so the body is never decoded here.
local HEADER = {'id', 'status', 'attempt', 'retry_count', 'max_retries', 'priority', 'assigned_to',
                'started_at', 'completed_at', 'error', 'reason', 'node_losses', 'avoid_node', 'avoid_until',
                'affinity', 'target', 'enqueued_at', 'tag_list', 'on_dependency_failure', 'parent_list'}
-- Optional fields: absent from a record (a job without dependencies, or a record stored before they
-- existed) they read as null, and a null one is left out when the header is written back.
local HEADER_OPTIONAL = {on_dependency_failure = true, parent_list = true}
-- '"<field>":' per header field, as constants: nothing is built per call or per record parsed.
local HEADER_PREFIX = {'"id":', '"status":', '"attempt":', '"retry_count":', '"max_retries":', '"priority":',
                       '"assigned_to":', '"started_at":', '"completed_at":', '"error":', '"reason":',
                       '"node_losses":', '"avoid_node":', '"avoid_until":', '"affinity":', '"target":',
                       '"enqueued_at":', '"tag_list":', '"on_dependency_failure":', '"parent_list":'}

-- Index of the last character of the JSON scalar token starting at pos, or nil.
local function token_end(s, pos)
  if s:sub(pos, pos) == '"' then
    local i = pos + 1
    while true do
      local q = s:find('["\\]', i)
      if not q then return nil end
      if s:sub(q, q) == '\\' then i = q + 2 else return q end
    end
  end
  local e = s:find('[,}]', pos)
  if not e then return nil end
  return e - 1
end

-- Returns the header as {field = raw JSON token} and the rest of the record (starting at ',' or '}'),
-- or nil when the record does not start with the expected header.
local function parse_header(s)
  local h = {}
  local pos = 2
  for i, k in ipairs(HEADER) do
    local prefix = HEADER_PREFIX[i]
    -- An absent optional field is told by its first letter, without cutting out a substring.
    if HEADER_OPTIONAL[k] and s:byte(pos + 1) ~= prefix:byte(2) then
      h[k] = 'null'
    elseif s:sub(pos, pos + #prefix - 1) == prefix then
      pos = pos + #prefix
      local last = token_end(s, pos)
      if not last then return nil end
      h[k] = s:sub(pos, last)
      pos = last + 2
    elseif HEADER_OPTIONAL[k] then
      h[k] = 'null'
    else
      return nil
    end
  end
  return h, s:sub(pos - 1)
end

local function format_header(h, rest)
  local parts = {}
  for i, k in ipairs(HEADER) do
    if not (HEADER_OPTIONAL[k] and h[k] == 'null') then parts[#parts + 1] = HEADER_PREFIX[i] .. h[k] end
  end
  return '{' .. table.concat(parts, ',') .. rest
end

local function jstr(value)
  if value == nil then return 'null' end
  return cjson.encode(tostring(value))
end

local function tok_str(tok)
  if tok == nil or tok == 'null' then return nil end
  return cjson.decode(tok)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Append one attempt entry to the record's `attempts` list, which is its last field: the record
-- always ends with `]}` closing that list.
local function append_attempt(record, entry)
  if record:sub(-3) == '[]}' then return record:sub(1, -3) .. entry .. ']}' end
  return record:sub(1, -3) .. ',' .. entry .. ']}'
end

local function attempt_entry(attempt, node, started_at, ended_at, outcome, err)
  local parts = {'{"attempt":' .. string.format('%d', attempt), '"node":' .. jstr(node)}
  if started_at then parts[#parts + 1] = '"started_at":' .. jstr(started_at) end
  if ended_at then parts[#parts + 1] = '"ended_at":' .. jstr(ended_at) end
  parts[#parts + 1] = '"outcome":' .. jstr(outcome)
  if err then parts[#parts + 1] = '"error":' .. jstr(err) end
  return table.concat(parts, ',') .. '}'
end

-- Exponential backoff with jitter for retry number n (1-based): base * 2^(n-1), capped, then a random
-- 50-100 % of it (the microseconds of the Redis clock are the randomness: scripts have no other).
local function backoff_ms(n, base, cap)
  local delay = math.min(cap, base * 2 ^ (n - 1))
  local micros = tonumber(redis.call('TIME')[2])
  return math.floor(delay * (0.5 + (micros % 1000) / 2000))
end

-- Drop dead-letter entries older than the retention (their records expired with it).
local function expire_dead(dlq, now, retention_s)
  redis.call('ZREMRANGEBYSCORE', dlq, '-inf', now - tonumber(retention_s) * 1000)
end

-- Cap a ZSET (oldest first out); returns the members removed.
local function trim_oldest(key, cap)
  local excess = redis.call('ZCARD', key) - cap
  if excess <= 0 then return {} end
  local removed = redis.call('ZRANGE', key, 0, excess - 1)
  redis.call('ZREMRANGEBYRANK', key, 0, excess - 1)
  return removed
end

-- Nodes listen to a small control channel instead of the public event channel: a wake-up ("wake")
-- when jobs became claimable, and the events that concern them (cancellations, membership).
local WAKE = 'wake'

-- An event in the shape of secauto.models.Event (type first, so subscribers can route on a prefix).
local function event(kind, now_iso, job_id, node_id, status, attempt, err, reason)
  local parts = {'{"type":' .. jstr(kind), '"version":1', '"timestamp":' .. jstr(now_iso)}
  if job_id then parts[#parts + 1] = '"job_id":' .. jstr(job_id) end
  if node_id then parts[#parts + 1] = '"node_id":' .. jstr(node_id) end
  if status then parts[#parts + 1] = '"status":' .. jstr(status) end
  if attempt then parts[#parts + 1] = '"attempt":' .. string.format('%d', attempt) end
  if err then parts[#parts + 1] = '"error":' .. jstr(err) end
  if reason then parts[#parts + 1] = '"reason":' .. jstr(reason) end
  return table.concat(parts, ',') .. '}'
end

local function queue_score(priority, seq)
  return -priority * 1e12 + seq
end

-- Move delayed jobs that are due into the queue (they keep their priority; FIFO by due order).
local function promote_due(delayed, queue, sequence, prefix, now)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed, id)
    local key = prefix .. id
    local record = redis.call('GET', key)
    local h, rest
    if record then h, rest = parse_header(record) end
    if h and tok_str(h.status) == 'pending' then
      h.enqueued_at = string.format('%d', now)
      redis.call('SET', key, format_header(h, rest), 'KEEPTTL')
      -- A retry already waited its turn once: it goes to the front of its priority band.
      local seq = tonumber(h.retry_count) > 0 and 0 or redis.call('INCR', sequence)
      redis.call('ZADD', queue, queue_score(tonumber(h.priority), seq), id)
    end
  end
  return #due
end

-- The tags of a job, from its header's comma-separated tag_list.
local function job_tags(h)
  local tags = {}
  local list = tok_str(h.tag_list)
  if list then
    for tag in string.gmatch(list, '[^,]+') do tags[#tags + 1] = tag end
  end
  return tags
end

-- A running attempt ended (finished, handed back, recovered or cancelled): free its node's slot and
-- its tags' cluster-wide counts. Counts never go below zero (claims also resynchronise the node's).
local function release_slot(h, load_key, tags_key)
  local node = tok_str(h.assigned_to)
  if node and redis.call('HINCRBY', load_key, node, -1) < 0 then redis.call('HSET', load_key, node, 0) end
  for _, tag in ipairs(job_tags(h)) do
    if redis.call('HINCRBY', tags_key, tag, -1) <= 0 then redis.call('HDEL', tags_key, tag) end
  end
end

-- The active nodes: those registered in the capacity hash whose node record exists, sorted by id, with
-- their capacity and current load. The caller is always included (it is claiming right now).
local function active_nodes(capacity_key, load_key, node_prefix, caller, caller_capacity, caller_load)
  local names, capacity, load = {}, {}, {}
  local entries = redis.call('HGETALL', capacity_key)
  for i = 1, #entries, 2 do
    local name = entries[i]
    if name == caller or redis.call('EXISTS', node_prefix .. name) == 1 then
      names[#names + 1] = name
      capacity[name] = tonumber(entries[i + 1])
      load[name] = tonumber(redis.call('HGET', load_key, name) or '0')
    end
  end
  if not capacity[caller] then names[#names + 1] = caller end
  capacity[caller], load[caller] = caller_capacity, caller_load
  table.sort(names)
  return names, capacity, load
end

-- Rendezvous (highest random weight) hashing: the node that owns an affinity key. When a node leaves,
-- only the keys it owned move, each to one other node.
-- redis.sha1hex exists in Redis; the embedded store's Lua lacks it, and there (one node) any stable
-- weight will do.
local function weight_of(text)
  if redis.sha1hex then return redis.sha1hex(text):sub(1, 12) end
  local h = 0
  for i = 1, #text do h = (h * 31 + text:byte(i)) % 2147483647 end
  return string.format('%012d', h)
end

local function rendezvous(key, names)
  local best, best_weight = nil, nil
  for _, name in ipairs(names) do
    local weight = weight_of(name .. '\0' .. key)
    if not best_weight or weight > best_weight then best, best_weight = name, weight end
  end
  return best
end

-- Quotas (max_pending per API key) ------------------------------------------------------------------
-- A job submitted by a key with a quota has a field in the owner HASH (job id -> key name) and counts in
-- the pending HASH (key name -> live jobs) until it ends for good; then every script that records such
-- an end calls this. For a job without a quota it costs one HGET that finds nothing.
local function release_quota(id, owner_key, pending_key)
  local owner = redis.call('HGET', owner_key, id)
  if not owner then return end
  redis.call('HDEL', owner_key, id)
  if redis.call('HINCRBY', pending_key, owner, -1) <= 0 then redis.call('HDEL', pending_key, owner) end
end

-- Dependencies -------------------------------------------------------------------------------------
-- A job submitted with depends_on carries its dependencies' ids in the header's parent_list and
-- registers with each one that has not ended: it joins that job's dependents LIST and, while it waits,
-- its own waiting SET names the dependencies left. When a job ends for good (completed; failed for
-- good; cancelled), the script that records the end also settles its dependents: a dependent whose
-- last dependency ended is released (queued, or parked until its delay is over); one whose dependency
-- ended failed or cancelled is cancelled (on_dependency_failure cancel: reason dependency_failed, and
-- on down its own dependents) or carries on as if it had completed (run). A script settles at most
-- D.budget dependents; what is left goes to the backlog ZSET, which the leader works off (settle.lua),
-- so a deep cascade never blocks Redis for long and is never lost.
--
-- An ended job's record stays readable while a dependent may still need its final context (the
-- executor reads it when the dependent starts): dep-refs counts the dependents that have not ended
-- for good, and a job that ends while that count is non-zero keeps its record for up to D.hold seconds
-- (dep-pins remembers the TTL it gets back once the count drops to zero).
--
-- D, the dependency settings, is a fresh table from dependency_settings(), which the queue compiles
-- into its scripts (secauto.store.jobs.JobQueue; it would otherwise travel with every call): job,
-- dependents, waiting (key prefixes), refs, pins, backlog, queue, delayed, sequence (keys), channel,
-- control (channels), quota_pending, quota_owner (keys: a job cancelled here releases its quota),
-- retention, dlq_retention, hold (seconds), budget (dependents one script may settle).
--
-- The functions are built by dependency_library(D) only when a script needs them: every script call
-- runs the whole library's definitions, and most calls (claims, renewals, most job ends) need none.

local function dependency_library(D)
  local FINISHED = {completed = true, failed = true, cancelled = true}

  -- The ids of a comma-separated header list (parent_list), in order.
  local function split_list(tok)
    local ids = {}
    local list = tok_str(tok)
    if list then
      for id in string.gmatch(list, '[^,]+') do ids[#ids + 1] = id end
    end
    return ids
  end

  local function retention_of(status)
    if status == 'failed' then return D.dlq_retention end
    return D.retention
  end

  -- Keep an ended job's record past its retention (it has dependents that may read it).
  local function pin_record(id, status)
    local ttl = retention_of(status)
    redis.call('HSET', D.pins, id, ttl)
    redis.call('EXPIRE', D.job .. id, math.max(ttl, D.hold))
  end

  local function pin_if_held(id, status)
    if tonumber(redis.call('HGET', D.refs, id) or '0') > 0 then pin_record(id, status) end
  end

  -- A dependent of `id` (whose status is `status`) came to need its record.
  local function hold_record(id, status)
    redis.call('HINCRBY', D.refs, id, 1)
    if FINISHED[status] and redis.call('HEXISTS', D.pins, id) == 0 then pin_record(id, status) end
  end

  -- A dependent ended for good: its dependencies' records are not needed for it any more; the last one
  -- gives a pinned record its retention back.
  local function release_holds(h)
    for _, parent in ipairs(split_list(h.parent_list)) do
      if redis.call('HINCRBY', D.refs, parent, -1) <= 0 then
        redis.call('HDEL', D.refs, parent)
        local ttl = redis.call('HGET', D.pins, parent)
        if ttl then
          redis.call('HDEL', D.pins, parent)
          redis.call('EXPIRE', D.job .. parent, ttl)
        end
      end
    end
  end

  -- A waiting job stops waiting (it is cancelled): it leaves the dependents lists of the dependencies
  -- it still waited on (they have not ended), so that those lists hold only jobs that still wait.
  local function stop_waiting(id)
    local waiting = D.waiting .. id
    for _, parent in ipairs(redis.call('SMEMBERS', waiting)) do
      redis.call('LREM', D.dependents .. parent, 1, id)
    end
    redis.call('DEL', waiting)
  end

  -- A waiting job whose dependencies all ended: queue it, or park it until its delay (kept as its
  -- enqueued_at while it waited) is over.
  local function release_waiting(key, id, h, rest, now, now_iso)
    local due = tonumber(h.enqueued_at)
    h.status = '"pending"'
    if due > now then
      redis.call('ZADD', D.delayed, due, id)
    else
      h.enqueued_at = string.format('%d', now)
      redis.call('ZADD', D.queue, queue_score(tonumber(h.priority), redis.call('INCR', D.sequence)), id)
    end
    redis.call('SET', key, format_header(h, rest))
    redis.call('PUBLISH', D.channel, event('job.released', now_iso, id, nil, 'pending'))
  end

  -- End a job that is not running (waiting, or being submitted or requeued) because dependency
  -- `parent` ended `parent_status`. `held`: the job holds its dependencies' records (it registered).
  local function cancel_for_dependency(key, id, h, rest, parent, parent_status, now_iso, held)
    local message = 'dependency ' .. parent .. ' ended ' .. parent_status
    h.status = '"cancelled"'
    h.reason = '"dependency_failed"'
    h.error = jstr(message)
    h.completed_at = jstr(now_iso)
    redis.call('SET', key, format_header(h, rest), 'EX', D.retention)
    release_quota(id, D.quota_owner, D.quota_pending)
    if held then release_holds(h) end
    pin_if_held(id, 'cancelled')
    redis.call('PUBLISH', D.channel, event('job.cancelled', now_iso, id, nil, 'cancelled', nil, message,
                                           'dependency_failed'))
  end

  -- Settle the dependents of `id`, which ended `status` for good, and on down the jobs this cancels.
  -- Spends D.budget; a job whose dependents are not all settled when it runs out goes to the backlog.
  local function settle_dependents(id, status, now, now_iso)
    local work = {{id, status}}
    local woke = false
    local i = 1
    while i <= #work do
      local parent, parent_status = work[i][1], work[i][2]
      local list = D.dependents .. parent
      while D.budget > 0 do
        local child = redis.call('LPOP', list)
        if not child then break end
        D.budget = D.budget - 1
        local waiting = D.waiting .. child
        -- Not in the set: the child stopped waiting (cancelled) before this dependency ended.
        if redis.call('SREM', waiting, parent) == 1 then
          local key = D.job .. child
          local record = redis.call('GET', key)
          local h, rest
          if record then h, rest = parse_header(record) end
          if not h or tok_str(h.status) ~= 'waiting' then
            redis.call('DEL', waiting)
          elseif parent_status == 'completed' or tok_str(h.on_dependency_failure) == 'run' then
            if redis.call('SCARD', waiting) == 0 then
              release_waiting(key, child, h, rest, now, now_iso)
              woke = true
            end
          else
            stop_waiting(child)
            cancel_for_dependency(key, child, h, rest, parent, parent_status, now_iso, true)
            work[#work + 1] = {child, 'cancelled'}
          end
        end
      end
      if D.budget <= 0 and redis.call('EXISTS', list) == 1 then
        redis.call('ZADD', D.backlog, now, parent_status .. ':' .. parent)
      end
      i = i + 1
    end
    if woke then redis.call('PUBLISH', D.control, WAKE) end
  end

  -- Job `id` (header h, as it was before the end) ended `status` for good, and its record was written:
  -- release what it held, keep its record while dependents may read it, settle its dependents.
  local function job_ended(id, h, status, now, now_iso)
    release_holds(h)
    pin_if_held(id, status)
    settle_dependents(id, status, now, now_iso)
  end

  -- The status of job `id`, from `known` (statuses this script call already knows) or its record,
  -- which is then remembered in `known`; nil if it has none.
  local function status_of(id, known)
    if known[id] then return known[id] end
    local record = redis.call('GET', D.job .. id)
    local h = record and parse_header(record)
    if not h then return nil end
    known[id] = tok_str(h.status)
    return known[id]
  end

  -- A job (header h, about to be stored or requeued) enters its dependencies: it is 'cancelled' (a
  -- dependency ended failed or cancelled and its policy is cancel; returned with that dependency and
  -- its status), 'waiting' (registered with the dependencies that have not ended) or 'pending'. A
  -- dependency without a record (expired) does not hold it back. Nothing is written for a job that is
  -- cancelled.
  local function enter_dependencies(id, h, known)
    local parents = split_list(h.parent_list)
    local statuses = {}
    local cancel_on = tok_str(h.on_dependency_failure) ~= 'run'
    for i, parent in ipairs(parents) do
      local status = status_of(parent, known) or 'gone'
      statuses[i] = status
      if cancel_on and (status == 'failed' or status == 'cancelled') then return 'cancelled', parent, status end
    end
    local state = 'pending'
    for i, parent in ipairs(parents) do
      local status = statuses[i]
      if status ~= 'gone' then
        hold_record(parent, status)
        if not FINISHED[status] then
          redis.call('RPUSH', D.dependents .. parent, id)
          redis.call('SADD', D.waiting .. id, parent)
          state = 'waiting'
        end
      end
    end
    return state
  end

  return {D = D, split_list = split_list, job_ended = job_ended, settle_dependents = settle_dependents,
          enter_dependencies = enter_dependencies, cancel_for_dependency = cancel_for_dependency,
          stop_waiting = stop_waiting}
end
