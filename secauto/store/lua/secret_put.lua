-- Store (create or replace) one sealed secret, refusing a new name once the hash holds the maximum.
-- KEYS[1] secrets HASH; ARGV[1] name, ARGV[2] sealed record (JSON), ARGV[3] maximum number of secrets
-- Returns 1 created, 0 replaced, -1 refused (full).
local exists = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
if not exists and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if exists then return 0 end
return 1
