--[[
Apply a Twilio call status callback to the call registry, idempotently and in order.

Twilio may redeliver a callback or deliver callbacks out of order; SequenceNumber says
which is newer. A callback older than the one applied only fills fields still unknown.

KEYS[1] rec_call:{b}:<sid>   HASH   the call (fields below)
KEYS[2] rec_calls:{b}        ZSET   sid -> started_at ms, for newest-first listing
ARGV[1] call_sid
ARGV[2] sequence number (integer)
ARGV[3] started_at ms (integer; the earliest seen wins)
ARGV[4..] field, value pairs: parent_call_sid, from, to, direction, status, duration

Returns 1 when the callback was applied as the newest, 0 when it was older.
]]
local call, index = KEYS[1], KEYS[2]
local sid, seq, started = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

redis.call('ZADD', index, 'LT', started, sid)
local first = redis.call('ZSCORE', index, sid)
redis.call('HSET', call, 'call_sid', sid, 'started_at', first)
redis.call('HSETNX', call, 'state', 'none')

local applied_seq = redis.call('HGET', call, 'seq')
local newest = (not applied_seq) or tonumber(applied_seq) <= seq
for i = 4, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if newest then
    if value ~= '' then redis.call('HSET', call, field, value) end
  elseif value ~= '' then
    redis.call('HSETNX', call, field, value)
  end
end
if newest then
  redis.call('HSET', call, 'seq', seq)
  return 1
end
return 0
