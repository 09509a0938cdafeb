-- Presence: a server lifecycle event (see serverLua in presence_redis.go).
local h = redis.call('HMGET', KEYS[1], 'epoch', 'lease', 'down')
local epoch, lease, down = tonumber(h[1] or '0'), tonumber(h[2] or '0'), tonumber(h[3] or '0')
local e, until_ = tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[1] == 'server_down' then
  if e >= epoch and e > down then
    redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'lease', '0', 'down', ARGV[2])
    return 0
  end
  return -1
end
if e <= down or e < epoch then return -1 end
if e > epoch then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'lease', ARGV[3])
  return until_
end
if until_ > lease then
  redis.call('HSET', KEYS[1], 'lease', ARGV[3])
  return until_
end
return -1
