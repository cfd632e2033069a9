-- Recover running jobs whose node is presumed lost, and decide their fate:
--   retries left        -> pending again after a backoff (delayed set), preferring another node
--   retries used up     -> failed, dead-lettered (reason node_lost)
--   lost too many nodes -> failed, dead-lettered as poison (its attempts keep taking nodes down)
-- Which jobs (ARGV[10] mode):
--   expired  jobs whose lease deadline passed (the owner stopped renewing)
--   nodes    every running job assigned to one of the node ids in ARGV[16..]
-- Leader-fenced: with a non-empty ARGV[1] the caller must hold the leader lease (a deposed leader
-- changes nothing). A restarting node recovering its own jobs passes '' (they are assigned to it).
-- KEYS[1] running ZSET, KEYS[2] queue ZSET, KEYS[3] sequence, KEYS[4] delayed ZSET, KEYS[5] dlq ZSET,
-- KEYS[6] leader key, KEYS[7] load HASH, KEYS[8] tag HASH, KEYS[9] quota pending HASH, KEYS[10] quota
-- owner HASH (a job failed for good releases its quota)
-- ARGV[1] leader token or '', ARGV[2] job key prefix, ARGV[3] events channel, ARGV[4] now (RFC 3339),
-- ARGV[5] max jobs per call, ARGV[6] DLQ retention s, ARGV[7] DLQ cap, ARGV[8] backoff base ms,
-- ARGV[9] backoff cap ms, ARGV[10] mode, ARGV[11] poison limit, ARGV[12] avoid window ms,
-- ARGV[13] cause text ('lease expired', 'node lost', 'node restarted'), ARGV[14] node key prefix: when
-- not '', a named node whose record still exists is alive after all and is skipped; ARGV[15] control channel,
-- ARGV[16..] node ids (mode nodes)
-- A job failed for good settles its dependents in the same step (lib.lua, "Dependencies").
-- Returns {requeued, failed, quarantined, oldest lease deadline recovered (ms, 0 if none), entries in the
-- dependency backlog (settle.lua works them off)}, or -1 when the caller is not the leader.
local running, queue, sequence, delayed, dlq, leader = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local token, prefix, channel, now_iso = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit, dlq_retention, dlq_cap = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local base, cap, mode, poison_limit = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11])
local avoid_ms, cause = tonumber(ARGV[12]), ARGV[13]
local D = dependency_settings()
local deps = nil  -- the dependency library, built for the first job that needs it (one budget for all)
if token ~= '' and redis.call('GET', leader) ~= token then return -1 end
local now = now_ms()

local targets = {}
if mode == 'expired' then
  local expired = redis.call('ZRANGEBYSCORE', running, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #expired, 2 do targets[#targets + 1] = {expired[i], tonumber(expired[i + 1])} end
else
  local dead, node_prefix = {}, ARGV[14]
  for i = 16, #ARGV do
    if node_prefix == '' or redis.call('EXISTS', node_prefix .. ARGV[i]) == 0 then dead[ARGV[i]] = true end
  end
  local all = redis.call('ZRANGE', running, 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    if #targets >= limit then break end
    local record = redis.call('GET', prefix .. all[i])
    local h = record and parse_header(record)
    if h and dead[tok_str(h.assigned_to) or ''] then targets[#targets + 1] = {all[i], tonumber(all[i + 1])} end
  end
end

local requeued, failed, quarantined, oldest = 0, 0, 0, 0
for _, target in ipairs(targets) do
  local id, deadline = target[1], target[2]
  redis.call('ZREM', running, id)
  local key = prefix .. id
  local record = redis.call('GET', key)
  local h, rest
  if record then h, rest = parse_header(record) end
  if h and tok_str(h.status) == 'running' then
    if oldest == 0 or deadline < oldest then oldest = deadline end
    local lost_on = tok_str(h.assigned_to)
    local attempt = tonumber(h.attempt)
    release_slot(h, KEYS[7], KEYS[8])
    local retries, max_retries = tonumber(h.retry_count), tonumber(h.max_retries)
    local losses = tonumber(h.node_losses) + 1
    local message = cause .. ' (node ' .. tostring(lost_on) .. ')'
    rest = append_attempt(rest, attempt_entry(attempt, lost_on, tok_str(h.started_at), now_iso, 'node_lost', message))
    h.node_losses = string.format('%d', losses)
    h.error = jstr(message)
    if losses >= poison_limit or retries >= max_retries then
      local reason = losses >= poison_limit and 'poison' or 'node_lost'
      if reason == 'poison' then
        h.error = jstr('quarantined: ' .. losses .. ' attempts ended with their node lost; last: ' .. message)
      end
      release_quota(id, KEYS[10], KEYS[9])
      h.status = '"failed"'
      h.reason = jstr(reason)
      h.completed_at = jstr(now_iso)
      redis.call('SET', key, format_header(h, rest), 'EX', dlq_retention)
      expire_dead(dlq, now, dlq_retention)
      redis.call('ZADD', dlq, now, id)
      for _, old in ipairs(trim_oldest(dlq, dlq_cap)) do redis.call('DEL', prefix .. old) end
      redis.call('PUBLISH', channel, event('job.failed', now_iso, id, lost_on, 'failed', attempt, message, reason))
      redis.call('PUBLISH', channel, event('job.dead_lettered', now_iso, id, lost_on, 'failed', attempt, message,
                                            reason))
      if reason == 'poison' then quarantined = quarantined + 1 else failed = failed + 1 end
      if h.parent_list ~= 'null' or redis.call('EXISTS', D.dependents .. id) == 1 then
        deps = deps or dependency_library(D)
        deps.job_ended(id, h, 'failed', now, now_iso)
      end
    else
      local due = now + backoff_ms(retries + 1, base, cap)
      h.status = '"pending"'
      h.retry_count = string.format('%d', retries + 1)
      h.assigned_to = 'null'
      h.reason = '"node_lost"'
      h.avoid_node = jstr(lost_on)
      h.avoid_until = string.format('%d', due + avoid_ms)
      h.enqueued_at = string.format('%d', due)
      redis.call('SET', key, format_header(h, rest))
      redis.call('ZADD', delayed, due, id)
      redis.call('PUBLISH', channel, event('job.retrying', now_iso, id, lost_on, 'pending', attempt, message,
                                            'node_lost'))
      requeued = requeued + 1
    end
  end
end
if requeued > 0 then redis.call('PUBLISH', ARGV[15], WAKE) end
return {requeued, failed, quarantined, oldest, redis.call('ZCARD', D.backlog)}
