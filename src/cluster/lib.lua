-- Shared by every script: prepended to each at build time (bridge.rs), so each still runs as
-- one self-contained EVAL.

-- Remove queue entry `e` from every index it is in. Returns true if the entry existed.
local function drop_entry(e)
  local h = redis.call('HMGET', 'rl:e:' .. e, 'tags', 'node')
  if h[1] then
    for _, t in ipairs(cjson.decode(h[1])) do redis.call('ZREM', 'rl:t:' .. t, e) end
  end
  if h[2] then redis.call('SREM', 'rl:ne:' .. h[2], e) end
  redis.call('ZREM', 'rl:open', e)
  redis.call('DEL', 'rl:e:' .. e)
  return h[2] ~= false
end

-- `x` paired with someone else or left: its "do not re-pair" relation ends on both sides.
local function end_avoid(x)
  local o = redis.call('GET', 'rl:avoid:' .. x)
  if o then
    redis.call('DEL', 'rl:avoid:' .. x)
    if redis.call('GET', 'rl:avoid:' .. o) == x then redis.call('DEL', 'rl:avoid:' .. o) end
  end
end

