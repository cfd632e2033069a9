-- Work off the dependency backlog: jobs that ended for good while a script had no budget left to
-- settle all their dependents (lib.lua, "Dependencies"). Oldest first, within D.budget dependents; an
-- entry not finished goes back to the end of the backlog. Leader-fenced: a deposed leader changes nothing.
-- KEYS[1] leader key
-- ARGV[1] leader token, ARGV[2] now (RFC 3339), ARGV[3] most entries
-- Returns the number of backlog entries left, or -1 when the caller is not the leader.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local deps = dependency_library(dependency_settings())
local D = deps.D
local now = now_ms()
for _, entry in ipairs(redis.call('ZRANGE', D.backlog, 0, tonumber(ARGV[3]) - 1)) do
  if D.budget <= 0 then break end
  redis.call('ZREM', D.backlog, entry)
  local sep = entry:find(':', 1, true)
  deps.settle_dependents(entry:sub(sep + 1), entry:sub(1, sep - 1), now, ARGV[2])
end
return redis.call('ZCARD', D.backlog)
