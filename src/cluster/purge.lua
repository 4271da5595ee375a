-- A node's heartbeat expired: remove every queue entry it left behind.
-- ARGV: node. Returns the number of entries removed.
local node = ARGV[1]
local n = 0
for _, e in ipairs(redis.call('SMEMBERS', 'rl:ne:' .. node)) do
  local h = redis.call('HGET', 'rl:e:' .. e, 'tags')
  if h then
    for _, t in ipairs(cjson.decode(h)) do redis.call('ZREM', 'rl:t:' .. t, e) end
  end
  redis.call('ZREM', 'rl:open', e)
  redis.call('DEL', 'rl:e:' .. e)
  n = n + 1
end
redis.call('DEL', 'rl:ne:' .. node)
redis.call('SREM', 'rl:nodes', node)
return n
