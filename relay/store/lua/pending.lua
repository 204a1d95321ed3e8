-- (common.lua is prepended: see _Script.load in relay/store/redisparts.py)
-- ARGV: prefix, instance, authority, after, after + 1, limit.
local q = qkey(ARGV[3])
local page = redis.call('XRANGE', q, '(' .. ARGV[4] .. '-0', '+', 'COUNT', tonumber(ARGV[6]))
if #page == 0 then return page end
-- The ledger: this instance now delivers these items (a takeover counts as a delivery).
redis.call('XAUTOCLAIM', q, 'relay', INST, 0, ARGV[5] .. '-0', 'COUNT', #page)
local last = page[#page][1]
local lastms = tonumber(string.sub(last, 1, string.find(last, '-', 1, true) - 1))
for _ = 1, 16 do
  local got = redis.call('XREADGROUP', 'GROUP', 'relay', INST, 'COUNT', #page, 'STREAMS', q, '>')
  if not got then break end
  local entries = got[1][2]
  if #entries == 0 then break end
  local id = entries[#entries][1]
  if tonumber(string.sub(id, 1, string.find(id, '-', 1, true) - 1)) >= lastms then break end
end
local consumers = redis.call('XINFO', 'CONSUMERS', q, 'relay')
for _, c in ipairs(consumers) do
  local name, pending
  for k = 1, #c, 2 do
    if c[k] == 'name' then name = c[k + 1] elseif c[k] == 'pending' then pending = c[k + 1] end
  end
  if name ~= INST and pending == 0 then redis.call('XGROUP', 'DELCONSUMER', q, 'relay', name) end
end
return page
