-- Take this user out of the queue. ARGV: uid. Returns 1 if it was queued, 0 if it was not
-- (another node claimed it first: a `paired` for it is on its way).
local uid = ARGV[1]
local h = redis.call('HMGET', 'rl:e:' .. uid, 'tags', 'node')
if not h[2] then return 0 end
for _, t in ipairs(cjson.decode(h[1])) do redis.call('ZREM', 'rl:t:' .. t, uid) end
redis.call('SREM', 'rl:ne:' .. h[2], uid)
redis.call('ZREM', 'rl:open', uid)
redis.call('DEL', 'rl:e:' .. uid)
return 1
