-- Delete a schedule: definition, state, history, pending slot. Its jobs are left alone.
-- KEYS[1] definitions HASH, KEYS[2] state HASH, KEYS[3] due ZSET, KEYS[4] history LIST,
-- KEYS[5] active jobs SET, KEYS[6] buffered SET
-- ARGV[1] name, ARGV[2] api (refuses config schedules) | config
-- Returns deleted, not_found or managed_by_config.
local name = ARGV[1]
if redis.call('HEXISTS', KEYS[1], name) == 0 then return 'not_found' end
if ARGV[2] == 'api' and redis.call('HGET', KEYS[2], 'source') == 'config' then return 'managed_by_config' end
redis.call('HDEL', KEYS[1], name)
redis.call('DEL', KEYS[2], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[3], name)
redis.call('SREM', KEYS[6], name)
return 'deleted'
