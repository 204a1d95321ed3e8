-- Shared by the scripts that queue items: prepended to accept, receipts, fire, due
-- and pending when they are loaded (relay/store/redisparts.py, _Script.load).
local P = ARGV[1]
local INST = ARGV[2]
local SEQ = P .. 'seq'
local RECIPIENTS = P .. 'recipients'
local TIMERS = P .. '{timers}:z'
local LEASES = P .. '{timers}:lease'
local ESCALATING = P .. 'escalating'
local RETENTION = P .. 'retention'
local UPLOADS = P .. 'uploads'
local LOG = P .. 'log'
local CHANNEL = P .. 'push'
local TERMINAL = {acknowledged = true, rejected = true, expired = true}
local STEPS = {'1', '2', '3', '9'}
local pushed = {}

local function qkey(aid) return P .. '{' .. aid .. '}:q' end
local function mkey(id) return P .. '{' .. id .. '}:m' end

-- Queue one item; payload '' means "the message's own envelope" (stored once, in the
-- message hash) and ``envelope`` is what other instances receive for it.
local function enqueue(aid, typ, msg, payload, at, reminder, note, envelope)
  local seq = redis.call('INCR', SEQ)
  local q = qkey(aid)
  if redis.call('EXISTS', q) == 0 then
    redis.call('XGROUP', 'CREATE', q, 'relay', '0', 'MKSTREAM')
  end
  local f = {'t', typ, 'm', msg, 'at', at}
  if payload ~= '' then f[#f + 1] = 'p'; f[#f + 1] = payload end
  if reminder == '1' then f[#f + 1] = 'r'; f[#f + 1] = '1' end
  if note ~= '' then f[#f + 1] = 'n'; f[#f + 1] = note end
  redis.call('XADD', q, seq .. '-0', unpack(f))
  redis.call('SADD', RECIPIENTS, aid)
  local body = payload
  if body == '' then body = envelope end
  pushed[#pushed + 1] = {seq, aid, typ, msg, body, at, reminder == '1' and 1 or 0, note}
  return seq
end

local function drop_timers(msg)
  local members = {}
  for i, s in ipairs(STEPS) do members[i] = msg .. '|' .. s end
  redis.call('ZREM', TIMERS, unpack(members))
  redis.call('HDEL', LEASES, unpack(members))
  redis.call('ZREM', ESCALATING, msg)
end

-- A receipt: idempotent on (signer, status, step); queued for ``notify``; its leaf
-- hash (hex, computed by the caller: Lua has no SHA-256) appended to the log. The state
-- change it makes is given by the caller (keys/lifecycle.py): from any state in the
-- comma-separated ``before`` to ``after`` ('' for none); ``closes`` ('1') bumps the
-- fencing generation and drops the timers in the same script. Returns the seq, or 0
-- when already stored.
local function add_receipt(msg, status, signer, at, token, received_at, step, notify, before, after, closes, leaf)
  local pre = P .. '{' .. msg .. '}:'
  if redis.call('SADD', pre .. 'rk', signer .. '|' .. status .. '|' .. step) == 0 then
    return 0
  end
  local li = redis.call('RPUSH', LOG, leaf) - 1
  redis.call('RPUSH', pre .. 'r', cjson.encode({status, signer, at, token, received_at, step, li}))
  local seq = enqueue(notify, 'receipt', msg, token, received_at, '0', '', '')
  if after ~= '' then
    local mk = mkey(msg)
    local state = redis.call('HGET', mk, 'state')
    if state and string.find(',' .. before .. ',', ',' .. state .. ',', 1, true) then
      redis.call('HSET', mk, 'state', after)
      if closes == '1' then
        redis.call('HINCRBY', mk, 'gen', 1)
        drop_timers(msg)
      end
    end
  end
  return seq
end

local function publish()
  if #pushed > 0 then
    redis.call('PUBLISH', CHANNEL, INST .. '\n' .. cjson.encode(pushed))
  end
end
