-- (common.lua is prepended: see _Script.load in relay/store/redisparts.py)
-- ARGV: prefix, instance, then one JSON object per escalation (every number a string).
local out = {}
for a = 3, #ARGV do
  local e = cjson.decode(ARGV[a])
  local msg = e.msg
  local member = msg .. '|' .. e.step
  local mk = mkey(msg)
  local score = redis.call('ZSCORE', TIMERS, member)
  if not score or tonumber(score) ~= tonumber(e.due) then
    out[#out + 1] = {0}  -- fired already (here or by another instance), or moved
  else
    local m = redis.call('HMGET', mk, 'state', 'gen', 'envelope', 'step', 'accepted_at', 'released')
    -- The claim: whoever removes the timer fires it.
    redis.call('ZREM', TIMERS, member)
    redis.call('HDEL', LEASES, member)
    if not m[1] or tonumber(m[2]) ~= tonumber(e.gen) or TERMINAL[m[1]] then
      out[#out + 1] = {0}  -- fenced off by a decision, or the message is closed
    else
      local seqs = {1}
      local qi = P .. '{' .. msg .. '}:qi'
      for _, it in ipairs(e.items) do
        local seq = enqueue(it[1], it[2], msg, it[3], e.due, it[4], it[5], m[3])
        if it[2] == 'envelope' and it[3] == '' then redis.call('SADD', qi, it[1] .. '|' .. seq) end
        seqs[#seqs + 1] = seq
      end
      if e.receipt ~= cjson.null then
        local r = e.receipt
        local seq = add_receipt(msg, r[1], r[2], r[3], r[4], r[5], r[6], e.sender, '', '', '0', r[7])
        if seq ~= 0 then seqs[#seqs + 1] = seq end
      end
      if e.drop then
        for _, copy in ipairs(redis.call('SMEMBERS', qi)) do
          local sep = string.find(copy, '|', 1, true)
          local q = qkey(string.sub(copy, 1, sep - 1))
          local id = string.sub(copy, sep + 1) .. '-0'
          redis.call('XACK', q, 'relay', id)
          redis.call('XDEL', q, id)
        end
        redis.call('DEL', qi)
      end
      if e.new_state ~= '' then redis.call('HSET', mk, 'state', e.new_state) end
      if e.close then
        redis.call('HINCRBY', mk, 'gen', 1)
        drop_timers(msg)
      end
      if e.record_step then
        if tonumber(e.step) > tonumber(m[4]) then redis.call('HSET', mk, 'step', e.step) end
        redis.call('ZADD', ESCALATING, m[5], msg)
      end
      if #e.released > 0 then
        local set = {}
        for _, f in ipairs(cjson.decode(m[6])) do set[f] = true end
        for _, f in ipairs(e.released) do set[f] = true end
        local merged = {}
        for f in pairs(set) do merged[#merged + 1] = f end
        table.sort(merged)
        redis.call('HSET', mk, 'released', cjson.encode(merged))
      end
      if e.next ~= cjson.null and not e.close then
        redis.call('ZADD', TIMERS, e.next[2], msg .. '|' .. e.next[1])
      end
      out[#out + 1] = seqs
    end
  end
end
publish()
return out
