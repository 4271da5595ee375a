-- A node's heartbeat expired: remove every queue entry it left behind.
-- ARGV: node. Returns the number of entries removed.
local node = ARGV[1]
local n = 0
for _, e in ipairs(redis.call('SMEMBERS', 'rl:ne:' .. node)) do
  drop_entry(e)
  n = n + 1
end
redis.call('DEL', 'rl:ne:' .. node)
redis.call('SREM', 'rl:nodes', node)
return n
