-- Shared helpers, prepended to every script by secauto/store/scripts.py.
--
-- A job record is a JSON object whose first fields (the header) are the mutable scalars listed in
-- HEADER, in this order (secauto/models.py: Job). Scripts rewrite the header and keep the rest of the
-- record byte for byte: Redis' cjson cannot round-trip user data (empty lists become objects, large
-- numbers lose digits), so the body is never decoded here.
local HEADER = {'id', 'status', 'attempt', 'retry_count', 'max_retries', 'priority', 'assigned_to',
                'started_at', 'completed_at', 'error', 'reason', 'node_losses', 'avoid_node', 'avoid_until',
                'affinity', 'target', 'enqueued_at', 'tag_list'}

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
  for _, k in ipairs(HEADER) do
    local prefix = '"' .. k .. '":'
    if s:sub(pos, pos + #prefix - 1) ~= prefix then return nil end
    pos = pos + #prefix
    local last = token_end(s, pos)
    if not last then return nil end
    h[k] = s:sub(pos, last)
    pos = last + 2
  end
  return h, s:sub(pos - 1)
end

local function format_header(h, rest)
  local parts = {}
  for i, k in ipairs(HEADER) do parts[i] = '"' .. k .. '":' .. h[k] end
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
