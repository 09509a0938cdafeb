-- The app index's garbage collection: KEYS[1] sorted set; ARGV[1] member,
-- ARGV[2] score. Removes the member if its score is still ARGV[2].
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
