-- Shared helpers, prepended to every script by secauto/store/scripts.py.
--
-- A job record is a JSON object whose first fields (the header) are the mutable scalars listed in
-- HEADER, in this order (secauto/models.py: Job). Scripts rewrite the header and keep the rest of the
-- record byte for byte: Redis' cjson cannot round-trip user data (empty lists become objects, large
-- numbers lose digits), so the body is never decoded here.
local HEADER = {'id', 'status', 'attempt', 'retry_count', 'max_retries', 'priority', 'assigned_to',
                'started_at', 'completed_at', 'error'}

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

-- An event in the shape of secauto.models.Event (type first, so subscribers can route on a prefix).
local function event(kind, now_iso, job_id, node_id, status, attempt, err)
  local parts = {'{"type":' .. jstr(kind), '"version":1', '"timestamp":' .. jstr(now_iso)}
  if job_id then parts[#parts + 1] = '"job_id":' .. jstr(job_id) end
  if node_id then parts[#parts + 1] = '"node_id":' .. jstr(node_id) end
  if status then parts[#parts + 1] = '"status":' .. jstr(status) end
  if attempt then parts[#parts + 1] = '"attempt":' .. string.format('%d', attempt) end
  if err then parts[#parts + 1] = '"error":' .. jstr(err) end
  return table.concat(parts, ',') .. '}'
end

local function queue_score(priority, seq)
  return -priority * 1e12 + seq
end
