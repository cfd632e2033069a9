-- Claim up to ARGV[2] pending jobs for node ARGV[1], in queue order (priority, then FIFO), in one
-- atomic step: take from the queue, mark running, assign, start a lease and bump the fencing token
-- (attempt). Never pop-then-write. Due delayed jobs are promoted first.
--
-- Placement: every job in the scanned window has a preferred node, and a node claims a job only if it
-- is that node, or once the job has waited long enough for it:
--   affinity key      rendezvous hashing over the active nodes (waits up to ARGV[9] ms)
--   round-robin target the node picked at submission, if still active (waits up to ARGV[8] ms)
--   otherwise         the least loaded node: lowest (running + 1) / capacity among the active nodes
--                     with a free slot, jobs ahead in the queue counted as taken by their preferred
--                     node; ties go to the claiming node, then by node id (waits up to ARGV[8] ms)
-- A retry avoids the node it failed on until avoid_until. A job whose tag is at its cluster-wide limit
-- (ARGV[12..]: tag, limit pairs) waits for a job with that tag to end. Priority comes first: once a
-- job is left for another node, this node takes no job of a lower priority in the same call (it would
-- start before a higher-priority job that is still waiting).
--
-- KEYS[1] queue ZSET, KEYS[2] running ZSET (score = lease deadline ms), KEYS[3] delayed ZSET,
-- KEYS[4] sequence, KEYS[5] load HASH (node -> running), KEYS[6] capacity HASH (node -> slots),
-- KEYS[7] tag HASH (tag -> running)
-- ARGV[1] node id, ARGV[2] max jobs, ARGV[3] lease ms, ARGV[4] now (RFC 3339), ARGV[5] job key prefix,
-- ARGV[6] events channel, ARGV[7] node key prefix, ARGV[8] dispatch wait ms, ARGV[9] affinity wait ms,
-- ARGV[10] this node's capacity, ARGV[11] jobs running on this node, ARGV[12..] tag limit pairs
-- Returns {claimed job records (JSON strings), ms until a skipped or delayed job should be looked at
-- again (-1: nothing to wait for)}.
local queue, running, delayed, sequence = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local load_key, capacity_key, tags_key = KEYS[5], KEYS[6], KEYS[7]
local node, max_jobs, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now_iso, prefix, channel, node_prefix = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local dispatch_wait, affinity_wait = tonumber(ARGV[8]), tonumber(ARGV[9])
local my_capacity, my_load = tonumber(ARGV[10]), tonumber(ARGV[11])
local tag_limit = {}
for i = 12, #ARGV, 2 do tag_limit[ARGV[i]] = tonumber(ARGV[i + 1]) end

local claimed = {}
local now = now_ms()
local recheck = -1
local function recheck_in(ms)
  ms = math.max(1, math.floor(ms))
  if recheck < 0 or ms < recheck then recheck = ms end
end

-- This node's own count is authoritative: it resynchronises the hash on every claim.
redis.call('HSET', capacity_key, node, my_capacity)
redis.call('HSET', load_key, node, my_load)
promote_due(delayed, queue, sequence, prefix, now)
local first_due = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if #first_due > 0 then recheck_in(tonumber(first_due[2]) - now) end
if max_jobs < 1 then return {claimed, recheck} end

local names, capacity, load = active_nodes(capacity_key, load_key, node_prefix, node, my_capacity, my_load)
local function least_loaded()
  local best, best_ratio = nil, nil
  for _, name in ipairs(names) do
    if load[name] < capacity[name] then
      local ratio = (load[name] + 1) / capacity[name]
      if not best_ratio or ratio < best_ratio or (ratio == best_ratio and name == node) then
        best, best_ratio = name, ratio
      end
    end
  end
  return best
end
local tag_running = {}
local function tag_blocked(tags)
  for _, tag in ipairs(tags) do
    local limit = tag_limit[tag]
    if limit then
      if tag_running[tag] == nil then tag_running[tag] = tonumber(redis.call('HGET', tags_key, tag) or '0') end
      if tag_running[tag] >= limit then return true end
    end
  end
  return false
end

local deadline = now + lease
local reserved_floor = nil  -- priority of the first job left for another node
local candidates = redis.call('ZRANGE', queue, 0, math.min(max_jobs * 4 + 32, 1000) - 1)
for _, id in ipairs(candidates) do
  if #claimed >= max_jobs then break end
  local key = prefix .. id
  local record = redis.call('GET', key)
  local h, rest
  if record then h, rest = parse_header(record) end
  if not h or tok_str(h.status) ~= 'pending' then
    -- A leftover (cancelled, expired or unreadable): it does not belong in the queue.
    redis.call('ZREM', queue, id)
  elseif #names > 1 and tok_str(h.avoid_node) == node and now < tonumber(h.avoid_until) then
    -- (with no other active node, avoiding this one would only delay the retry)
    recheck_in(tonumber(h.avoid_until) - now)
  elseif reserved_floor and tonumber(h.priority) < reserved_floor then
    break  -- the queue is in priority order: everything from here on is lower
  else
    local tags = job_tags(h)
    if not tag_blocked(tags) then
      local affinity, target = tok_str(h.affinity), tok_str(h.target)
      local preferred, wait
      if affinity then
        preferred, wait = rendezvous(affinity, names), affinity_wait
      elseif target and capacity[target] and load[target] < capacity[target] then
        preferred, wait = target, dispatch_wait
      else
        preferred, wait = least_loaded(), dispatch_wait
      end
      local age = now - tonumber(h.enqueued_at)
      if preferred == nil or preferred == node or age >= wait then
        redis.call('ZREM', queue, id)
        local attempt = tonumber(h.attempt) + 1
        h.status = '"running"'
        h.attempt = string.format('%d', attempt)
        h.assigned_to = jstr(node)
        h.started_at = jstr(now_iso)
        h.completed_at = 'null'
        record = format_header(h, rest)
        redis.call('SET', key, record)
        redis.call('ZADD', running, deadline, id)
        redis.call('PUBLISH', channel, event('job.started', now_iso, id, node, 'running', attempt))
        load[node] = load[node] + 1
        for _, tag in ipairs(tags) do
          redis.call('HINCRBY', tags_key, tag, 1)
          if tag_running[tag] then tag_running[tag] = tag_running[tag] + 1 end
        end
        claimed[#claimed + 1] = record
      else
        -- Left for its preferred node; counted there so the next jobs spread over the others.
        load[preferred] = load[preferred] + 1
        recheck_in(wait - age)
        reserved_floor = reserved_floor or tonumber(h.priority)
      end
    end
  end
end
redis.call('HSET', load_key, node, load[node])
return {claimed, recheck}
