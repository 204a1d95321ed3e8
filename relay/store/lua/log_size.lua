-- KEYS: cpar:log:size. ARGV: a size the log has been integrated to.
-- Raise the recorded size, never lower it (instances may integrate at once).
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
