-- Append audit entries to the audit stream, then trim it by length and by age (exact trims: see
-- secauto/store/audit.py). One call per batch, so the node packs one command, not one per entry.
-- KEYS[1] audit STREAM
-- ARGV[1] max entries, ARGV[2] oldest stream id to keep ("<ms>-0"), ARGV[3..] entries (JSON)
-- Returns the number of entries added.
local stream = KEYS[1]
for i = 3, #ARGV do
  redis.call('XADD', stream, '*', 'entry', ARGV[i])
end
redis.call('XTRIM', stream, 'MAXLEN', ARGV[1])
redis.call('XTRIM', stream, 'MINID', ARGV[2])
return #ARGV - 2
