-- ARGV: prefix, instance, n, then per nonce: nonce, ttl (s). 1 if it was new, else 0.
local out = {}
for k = 0, tonumber(ARGV[3]) - 1 do
  local key = ARGV[1] .. 'nonce:{' .. ARGV[4 + 2 * k] .. '}'
  if redis.call('SET', key, '1', 'NX', 'EX', ARGV[5 + 2 * k]) then out[#out + 1] = 1
  else out[#out + 1] = 0 end
end
return out
