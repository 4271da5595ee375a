-- Shared by every script: prepended to each at build time (bridge.rs), so each still runs as
-- one self-contained EVAL.

-- Remove queue entry `e`, whose hash fields `tags` (JSON) and `node` the caller has already
-- read (either may be false), from every index it is in.
local function drop_known(e, tags, node)
  if tags then
    for _, t in ipairs(cjson.decode(tags)) do redis.call('ZREM', 'rl:t:' .. t, e) end
  end
  if node then redis.call('SREM', 'rl:ne:' .. node, e) end
  redis.call('ZREM', 'rl:open', e)
  redis.call('DEL', 'rl:e:' .. e)
end

-- Remove queue entry `e` from every index it is in. Returns true if the entry existed.
local function drop_entry(e)
  local h = redis.call('HMGET', 'rl:e:' .. e, 'tags', 'node')
  drop_known(e, h[1], h[2])
  return h[2] ~= false
end

-- `x` paired with someone else or left: its "do not re-pair" relation ends on both sides.
-- `o`: the user `x` avoids, when the caller has read it already (false: none).
local function end_avoid(x, o)
  if o == nil then o = redis.call('GET', 'rl:avoid:' .. x) end
  if o then
    redis.call('DEL', 'rl:avoid:' .. x)
    if redis.call('GET', 'rl:avoid:' .. o) == x then redis.call('DEL', 'rl:avoid:' .. o) end
  end
end

