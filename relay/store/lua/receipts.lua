-- (common.lua is prepended: see _Script.load in relay/store/redisparts.py)
-- ARGV: prefix, instance, n, then 12 fields per receipt (then three: its transition;
-- the last: its leaf hash in the log).
local n = tonumber(ARGV[3])
local out = {}
local i = 4
for _ = 1, n do
  out[#out + 1] = add_receipt(ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5], ARGV[i+6], ARGV[i+7], ARGV[i+8], ARGV[i+9], ARGV[i+10], ARGV[i+11])
  i = i + 12
end
publish()
return out
