-- ARGV: 'set', a, b: a chat between a and b ended by next/find; they are not paired again
--       until one of them pairs with someone else or disconnects (kept at most an hour).
-- ARGV: 'clear', a: a paired with someone else, or disconnected: end its relation.
local a = ARGV[2]
if ARGV[1] == 'set' then
  local b = ARGV[3]
  -- A new relation replaces old ones on both sides.
  end_avoid(a)
  end_avoid(b)
  redis.call('SET', 'rl:avoid:' .. a, b, 'EX', 3600)
  redis.call('SET', 'rl:avoid:' .. b, a, 'EX', 3600)
else
  end_avoid(a)
end
return 1
