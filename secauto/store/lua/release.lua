-- Give up the leader lease if (and only if) the caller still holds it.
-- KEYS[1] leader key; ARGV[1] token. Returns 1 released, 0 not held.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
