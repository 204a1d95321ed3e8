-- (common.lua is prepended: see _Script.load in relay/store/redisparts.py)
-- ARGV: prefix, instance, before (ms), limit.
-- Forgets up to ``limit`` closed messages accepted before ``before`` (oldest first):
-- the hash, receipts, idempotency keys, queued copies of the envelope and timers; then
-- the attachments no message references any more. A message not closed yet is looked
-- at again after its expiry (and at least a day later). Returns {messages, receipts, queued, digest...}.
local before, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local messages, receipts, queued = 0, 0, 0
local gone = {}

local function forget_attachment(d)
  local pre = P .. '{' .. d .. '}:'
  redis.call('DEL', pre .. 'a', pre .. 'rd', pre .. 'ms')
  redis.call('ZREM', UPLOADS, d)
  gone[#gone + 1] = d
end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', RETENTION, '-inf', '(' .. before, 'LIMIT', 0, limit)) do
  local pre = P .. '{' .. id .. '}:'
  local m = redis.call('HMGET', pre .. 'm', 'state', 'expires', 'attachments')
  if not m[1] then
    redis.call('ZREM', RETENTION, id)
  elseif not TERMINAL[m[1]] then
    -- Not closed: look again once it expired, and not before a day has passed (a
    -- message whose expiry never closed it must not take every batch's place).
    redis.call('ZADD', RETENTION, math.max(tonumber(m[2]), before + 86400000), id)
  else
    receipts = receipts + redis.call('LLEN', pre .. 'r')
    for _, copy in ipairs(redis.call('SMEMBERS', pre .. 'qi')) do
      local sep = string.find(copy, '|', 1, true)
      local q = qkey(string.sub(copy, 1, sep - 1))
      local entry = string.sub(copy, sep + 1) .. '-0'
      redis.call('XACK', q, 'relay', entry)
      queued = queued + redis.call('XDEL', q, entry)
    end
    redis.call('DEL', pre .. 'm', pre .. 'r', pre .. 'rk', pre .. 'qi')
    drop_timers(id)
    redis.call('ZREM', RETENTION, id)
    for _, d in ipairs(cjson.decode(m[3])) do
      local ms = P .. '{' .. d .. '}:ms'
      redis.call('SREM', ms, id)
      if redis.call('SCARD', ms) == 0 and redis.call('EXISTS', P .. '{' .. d .. '}:a') == 1 then
        forget_attachment(d)
      end
    end
    messages = messages + 1
  end
end

-- Uploads never referenced: gone once older than ``before``. One still referenced
-- leaves this index; the last message referencing it takes it along (above).
for _, d in ipairs(redis.call('ZRANGEBYSCORE', UPLOADS, '-inf', '(' .. before, 'LIMIT', 0, limit)) do
  if redis.call('SCARD', P .. '{' .. d .. '}:ms') == 0 then
    forget_attachment(d)
  else
    redis.call('ZREM', UPLOADS, d)
  end
end

local out = {messages, receipts, queued}
for _, d in ipairs(gone) do out[#out + 1] = d end
return out
