-- ARGV: 'set', a, b: a chat between a and b ended by next/find; they are not paired again
--       until one of them pairs with someone else or disconnects (kept at most an hour).
-- ARGV: 'clear', a: a paired with someone else, or disconnected: end its relation.
local a = ARGV[2]
if ARGV[1] == 'set' then
  local b = ARGV[3]
  -- A new relation replaces old ones on both sides.
  for _, x in ipairs({a, b}) do
    local o = redis.call('GET', 'rl:avoid:' .. x)
    if o and redis.call('GET', 'rl:avoid:' .. o) == x then redis.call('DEL', 'rl:avoid:' .. o) end
  end
  redis.call('SET', 'rl:avoid:' .. a, b, 'EX', 3600)
  redis.call('SET', 'rl:avoid:' .. b, a, 'EX', 3600)
else
  local o = redis.call('GET', 'rl:avoid:' .. a)
  if o then
    redis.call('DEL', 'rl:avoid:' .. a)
    if redis.call('GET', 'rl:avoid:' .. o) == a then redis.call('DEL', 'rl:avoid:' .. o) end
  end
end
return 1
