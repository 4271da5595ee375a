-- Atomic cross-node pairing (one script run = one atomic step in Redis).
-- ARGV: mode ('q' = queue this user, 'o' = its interest wait passed), uid, node, ticket,
--       open ('1' = may pair with anyone open), tags (JSON array, normalised)
-- Returns {'queued'} | {'gone'} | {'paired', partner uid, partner ticket, epoch, common JSON}
-- Keys (standalone Redis; names are built here, so this is not Redis-Cluster safe):
--   rl:e:UID hash node/ticket/tags/seq · rl:t:TAG and rl:open zsets of UIDs by seq ·
--   rl:ne:NODE set of a node's entries · rl:avoid:UID · rl:node:NODE heartbeat · rl:seq, rl:epoch
local mode, uid, node, ticket = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local open = ARGV[5] == '1'
local tags = cjson.decode(ARGV[6])
local keepseq = nil

if mode == 'o' then
  local h = redis.call('HMGET', 'rl:e:' .. uid, 'ticket', 'seq', 'tags')
  if h[1] ~= ticket then return {'gone'} end
  keepseq = tonumber(h[2])
  tags = cjson.decode(h[3])
  open = true
  drop_entry(uid)
end

local avoid = redis.call('GET', 'rl:avoid:' .. uid)
local live = {}
local function alive(n)
  if n == node then return true end
  if live[n] == nil then live[n] = redis.call('EXISTS', 'rl:node:' .. n) == 1 end
  return live[n]
end

-- The longest-waiting acceptable entry of one index, with its hash (node, ticket, tags), read
-- once: never this user or the one it avoids; entries of dead nodes are purged on the way.
local function first(key)
  local i = 0
  while true do
    local r = redis.call('ZRANGE', key, i, i, 'WITHSCORES')
    if #r == 0 then return nil end
    local e, s = r[1], tonumber(r[2])
    local h = redis.call('HMGET', 'rl:e:' .. e, 'node', 'ticket', 'tags')
    if not h[1] then
      redis.call('ZREM', key, e)
    elseif not alive(h[1]) then
      drop_known(e, h[3], h[1])
    elseif e == uid or e == avoid then
      i = i + 1
    else
      return e, s, h
    end
  end
end

local best, bests, besth = nil, nil, nil
for _, t in ipairs(tags) do
  local e, s, h = first('rl:t:' .. t)
  if e and (bests == nil or s < bests) then best, bests, besth = e, s, h end
end
if best == nil and open then best, bests, besth = first('rl:open') end

if best then
  local mine = {}
  for _, t in ipairs(tags) do mine[t] = true end
  local common = {}
  for _, t in ipairs(cjson.decode(besth[3])) do
    if mine[t] then common[#common + 1] = t end
  end
  -- Byte order, as the Rust matchmaker sorts: Lua's `<` on strings is strcoll, and Redis sets
  -- LC_COLLATE from its environment, so under e.g. en_US.UTF-8 the order would differ.
  table.sort(common, function(x, y)
    for i = 1, math.min(#x, #y) do
      local a, b = string.byte(x, i), string.byte(y, i)
      if a ~= b then return a < b end
    end
    return #x < #y
  end)
  drop_known(best, besth[3], besth[1])
  -- Both now pair with someone else: any "don't re-pair" relation of either ends (this
  -- user's was read above).
  end_avoid(uid, avoid or false)
  end_avoid(best)
  local epoch = redis.call('INCR', 'rl:epoch')
  local cj = '[]'
  if #common > 0 then cj = cjson.encode(common) end
  return {'paired', best, besth[2], tostring(epoch), cj}
end

local seq = keepseq or redis.call('INCR', 'rl:seq')
local tj = '[]'
if #tags > 0 then tj = cjson.encode(tags) end
redis.call('HSET', 'rl:e:' .. uid, 'node', node, 'ticket', ticket, 'tags', tj, 'seq', seq)
redis.call('SADD', 'rl:ne:' .. node, uid)
for _, t in ipairs(tags) do redis.call('ZADD', 'rl:t:' .. t, seq, uid) end
if open then redis.call('ZADD', 'rl:open', seq, uid) end
return {'queued'}
