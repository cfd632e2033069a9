-- Delete a dead-lettered job (record and DLQ entry). Refuses jobs that are not in the DLQ.
-- KEYS[1] job key, KEYS[2] dlq ZSET; ARGV[1] job id
-- Returns 1 deleted, 0 not in the DLQ.
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
