-- (common.lua is prepended: see _Script.load in relay/store/redisparts.py)
-- ARGV: prefix, instance, n, then 11 fields per receipt (the last three: its transition).
local n = tonumber(ARGV[3])
local out = {}
local i = 4
for _ = 1, n do
  out[#out + 1] = add_receipt(ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5], ARGV[i+6], ARGV[i+7], ARGV[i+8], ARGV[i+9], ARGV[i+10])
  i = i + 11
end
publish()
return out
