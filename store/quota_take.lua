-- A token bucket shared by every process: see QuotaTake in spill.go.
-- KEYS[1] the bucket; ARGV[1] rate (tokens/s), ARGV[2] depth, ARGV[3] n,
-- ARGV[4] "take" (grant what is there, up to n) or "reserve" (grant n, going
-- into debt). Returns {granted, ms until the debt is paid}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, depth, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens, last = tonumber(v[1]), tonumber(v[2])
if tokens == nil or last == nil then
  tokens, last = depth, now
end
tokens = math.min(depth, tokens + math.max(0, now - last) * rate / 1000)
local granted, wait = 0, 0
if ARGV[4] == 'take' then
  granted = math.max(0, math.min(n, math.floor(tokens)))
  tokens = tokens - granted
else
  granted = n
  tokens = tokens - n
  if tokens < 0 then
    wait = math.ceil(-tokens * 1000 / rate)
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', now)
-- An idle bucket is full again after depth/rate: let it go a minute later.
redis.call('PEXPIRE', KEYS[1], math.ceil(depth * 1000 / rate) + 60000)
return {granted, wait}
