-- (common.lua is prepended: see _Script.load in relay/store/redisparts.py)
-- ARGV: prefix, instance, n, then 16 fields per message (the last: the accepted
-- receipt's leaf hash in the log).
local n = tonumber(ARGV[3])
local out = {}
local i = 4
for _ = 1, n do
  local id, sender, to, fallbacks, envelope, env_hash = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5]
  local created, expires, priority, ack_by, accepted_at = ARGV[i+6], ARGV[i+7], ARGV[i+8], ARGV[i+9], ARGV[i+10]
  local receipt, attachments, policy, timers = ARGV[i+11], ARGV[i+12], ARGV[i+13], ARGV[i+14]
  local leaf = ARGV[i+15]
  i = i + 16
  local mk = mkey(id)
  local old = redis.call('HMGET', mk, 'env_hash', 'accepted_receipt')
  if old[1] then
    if old[1] == env_hash then
      out[#out + 1] = {'duplicate', old[2]}
    else
      out[#out + 1] = {'conflict', ''}
    end
  else
    redis.call('HSET', mk, 'sender', sender, 'to', to, 'fallbacks', fallbacks,
      'envelope', envelope, 'env_hash', env_hash, 'created', created, 'expires', expires,
      'priority', priority, 'ack_by', ack_by, 'accepted_at', accepted_at,
      'accepted_receipt', receipt, 'state', 'accepted', 'attachments', attachments,
      'policy', policy, 'gen', '0', 'step', '0', 'released', '[]',
      'li', redis.call('RPUSH', LOG, leaf) - 1)
    redis.call('ZADD', RETENTION, accepted_at, id)
    for _, t in ipairs(cjson.decode(timers)) do
      redis.call('ZADD', TIMERS, t[2], id .. '|' .. t[1])
    end
    local result = {'accepted', receipt}
    local qi = P .. '{' .. id .. '}:qi'
    for _, aid in ipairs(cjson.decode(to)) do
      local seq = enqueue(aid, 'envelope', id, '', accepted_at, '0', '', envelope)
      redis.call('SADD', qi, aid .. '|' .. seq)
      result[#result + 1] = seq
    end
    local atts = cjson.decode(attachments)
    if #atts > 0 then
      local readers = cjson.decode(to)
      for _, f in ipairs(cjson.decode(fallbacks)) do readers[#readers + 1] = f end
      for _, d in ipairs(atts) do
        redis.call('SADD', P .. '{' .. d .. '}:rd', unpack(readers))
        redis.call('SADD', P .. '{' .. d .. '}:ms', id)
      end
    end
    out[#out + 1] = result
  end
end
publish()
return out
