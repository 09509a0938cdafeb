-- The pusher's append: see appendLua in sink_redis.go for KEYS and ARGV.
local wm = tonumber(redis.call('GET', KEYS[2]) or redis.call('GET', KEYS[3]) or '-1')
if ARGV[3] ~= '' and wm < tonumber(ARGV[3]) then return -1 end
if tonumber(ARGV[2]) <= wm then return 0 end
local n, from = #ARGV - 4, 1
if tonumber(ARGV[1]) <= wm then
  for p in string.gmatch(ARGV[4], '%d+') do
    if tonumber(p) > wm then break end
    from = from + 1
  end
end
for i = from, n, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 4 + i, 4 + math.min(i + 999, n)))
end
redis.call('SET', KEYS[2], ARGV[2])
return n - from + 1
