-- ARGV: prefix, instance, n, then per acknowledgement: authority, count, entry ids.
-- Returns how many items each one removed.
local P = ARGV[1]
local out = {}
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local q = P .. '{' .. ARGV[i] .. '}:q'
  local count = tonumber(ARGV[i + 1])
  local removed = 0
  if redis.call('EXISTS', q) == 1 then
    for first = i + 2, i + 1 + count, 1000 do
      local ids = {}
      for k = first, math.min(i + 1 + count, first + 999) do ids[#ids + 1] = ARGV[k] end
      redis.call('XACK', q, 'relay', unpack(ids))
      removed = removed + redis.call('XDEL', q, unpack(ids))
    end
  end
  out[#out + 1] = removed
  i = i + 2 + count
end
return out
