-- Create or replace a schedule's definition. Idempotent: the same definition again changes nothing (so
-- nodes starting with the same config.yaml at once keep history, pause and pending slot). A changed
-- definition keeps the pending slot unless its timing (cron/every, time zone, jitter, enabled) changed;
-- then the pending slot becomes ARGV[7], the first slot after now. Every change bumps the revision, so a
-- fire planned with the old definition is refused and planned again.
-- KEYS[1] definitions HASH, KEYS[2] state HASH, KEYS[3] due ZSET
-- ARGV[1] name, ARGV[2] definition JSON, ARGV[3] definition hash, ARGV[4] timing hash, ARGV[5] source
-- (config|api), ARGV[6] mode (create: refuse an existing name | replace | config: also replaces config
-- schedules), ARGV[7] first slot ms, ARGV[8] its due ms, ARGV[9] enabled (1|0), ARGV[10] most schedules,
-- ARGV[11] now (RFC 3339), ARGV[12] never (ms)
-- Returns created, updated, unchanged, exists, managed_by_config, too_many, or stale (the first slot is
-- not after the last slot handled: plan again with a newer time).
local defs, state, due, name, mode = KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[6]
local existing = redis.call('HEXISTS', defs, name) == 1
local st = redis.call('HMGET', state, 'source', 'def_hash', 'timing_hash', 'last_slot', 'due')
if existing then
  if mode == 'create' then return 'exists' end
  if st[1] == 'config' and mode ~= 'config' then return 'managed_by_config' end
  if st[2] == ARGV[3] then return 'unchanged' end
elseif redis.call('HLEN', defs) >= tonumber(ARGV[10]) then
  return 'too_many'
end
local reset = not existing or st[3] ~= ARGV[4]
if reset and st[4] and tonumber(ARGV[7]) <= tonumber(st[4]) then return 'stale' end
redis.call('HSET', defs, name, ARGV[2])
redis.call('HSET', state, 'def_hash', ARGV[3], 'timing_hash', ARGV[4], 'source', ARGV[5], 'updated_at', ARGV[11])
redis.call('HINCRBY', state, 'rev', 1)
if not existing then
  redis.call('HSET', state, 'created_at', ARGV[11], 'paused', '0')
end
local due_ms = st[5] or ARGV[8]
if reset then
  redis.call('HSET', state, 'slot', ARGV[7], 'due', ARGV[8])
  due_ms = ARGV[8]
end
if ARGV[9] == '1' and tonumber(due_ms) < tonumber(ARGV[12]) then
  redis.call('ZADD', due, due_ms, name)
else
  redis.call('ZREM', due, name)
end
if existing then return 'updated' end
return 'created'
