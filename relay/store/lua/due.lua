-- (common.lua is prepended: see _Script.load in relay/store/redisparts.py)
-- ARGV: prefix, instance, now, limit, lease ms. Takes a short lease on each due timer
-- that no other live instance holds, so instances do not plan the same steps twice.
local due = redis.call('ZRANGEBYSCORE', TIMERS, '-inf', ARGV[3], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = INST .. '|' .. (now + tonumber(ARGV[5]))
local out = {}
for k = 1, #due, 2 do
  local held = redis.call('HGET', LEASES, due[k])
  local take = true
  if held then
    local sep = string.find(held, '|', 1, true)
    local owner, till = string.sub(held, 1, sep - 1), tonumber(string.sub(held, sep + 1))
    take = owner == INST or till <= now
  end
  if take then
    redis.call('HSET', LEASES, due[k], lease)
    out[#out + 1] = due[k]
    out[#out + 1] = due[k + 1]
  end
end
return out
