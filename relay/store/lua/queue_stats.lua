-- KEYS[1]: the recipients set; ARGV[1]: prefix, ARGV[2]: items scanned per queue.
local out = {}
for _, aid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local q = ARGV[1] .. '{' .. aid .. '}:q'
  local depth = redis.call('XLEN', q)
  if depth == 0 then
    redis.call('SREM', KEYS[1], aid)
  else
    local oldest = nil
    for _, e in ipairs(redis.call('XRANGE', q, '-', '+', 'COUNT', tonumber(ARGV[2]))) do
      local f = e[2]
      for k = 1, #f, 2 do
        if f[k] == 'at' then
          local at = tonumber(f[k + 1])
          if oldest == nil or at < tonumber(oldest) then oldest = f[k + 1] end
        end
      end
    end
    out[#out + 1] = {aid, depth, oldest or ''}
  end
end
return out
