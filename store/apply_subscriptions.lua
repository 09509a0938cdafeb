-- Presence: subscribe and unsubscribe events (see subsLua in presence_redis.go).
for i = 1, #KEYS do
  local j = (i - 1) * 4
  local srv, e = ARGV[j + 2], tonumber(ARGV[j + 3])
  local cur = redis.call('HGET', KEYS[i], srv)
  local ce = cur and tonumber(string.match(cur, '^%d+'))
  if ARGV[j + 1] == 's' then
    if not (ce and ce > e) then redis.call('HSET', KEYS[i], srv, ARGV[j + 4]) end
  elseif ce and ce <= e then
    redis.call('HDEL', KEYS[i], srv)
  end
end
return #KEYS
