--[[
Apply a Twilio conference status callback: any event registers the conference (so its
recording callbacks are accepted); participant-join ties the call to it, so the call
lists (and, with no recording of its own, plays) the conference's recordings.
Idempotent: a redelivered join changes nothing.

KEYS[1] rec_conf:{b}:<conference_sid>        HASH   conference_sid, first_seen_ms
KEYS[2] rec_conf_calls:{b}:<conference_sid>  SET    calls that joined
KEYS[3] rec_call_confs:{b}:<call_sid>        SET    conferences the call joined
KEYS[4] rec_call:{b}:<call_sid>              HASH   the call (registered if unseen)
KEYS[5] rec_calls:{b}                        ZSET   listing index
(KEYS[2..5] are named even without a CallSid: the caller passes the conference's keys)
ARGV[1] conference_sid
ARGV[2] call_sid ("" for conference-wide events)
ARGV[3] StatusCallbackEvent
ARGV[4] now ms

Returns cjson {joined = true|false}: true when this callback tied a call to it.
]]
local conf, participants, joined_confs, call, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local cf, sid, event, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

redis.call('HSETNX', conf, 'conference_sid', cf)
redis.call('HSETNX', conf, 'first_seen_ms', now)
if sid == '' or event ~= 'participant-join' then
  return cjson.encode({ joined = false })
end
redis.call('SADD', participants, sid)
local joined = redis.call('SADD', joined_confs, cf) == 1
if redis.call('ZADD', index, 'NX', now, sid) == 1 then
  redis.call('HSET', call, 'call_sid', sid, 'started_at', now)
  redis.call('HSETNX', call, 'state', 'none')
end
return cjson.encode({ joined = joined })
