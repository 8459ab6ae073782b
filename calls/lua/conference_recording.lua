--[[
Apply a Twilio recording status callback for a conference recording (it names a
ConferenceSid and no CallSid). The recording is its own slot member, stored once as
<recording_sid>.mp3, and listed on every call that joined the conference.

Same rules as recording_status.lua: never downgrades, replays change nothing, an erased
recording is never touched again. A conference no conference-status callback has
registered is refused (the caller answers 4xx): nothing is written.

Runs behind the shared set_state (prelude).

KEYS[1] rec_conf:{b}:<conference_sid>       HASH   the conference (exists once registered)
KEYS[2] rec_call:{b}:<recording_sid>        HASH   the recording
KEYS[3] rec_conf_recs:{b}:<conference_sid>  ZSET   its recordings by start time
KEYS[4] rec_status:{b}                      STREAM status changes for SSE
KEYS[5] rec_pending:{b}                     SET    members in queued/processing
KEYS[6] rec_erased:{b}                      SET    tombstones
ARGV[1] conference_sid
ARGV[2] recording_sid
ARGV[3] RecordingStatus: in-progress | completed | absent | failed
ARGV[4] duration seconds ("" when unknown)
ARGV[5] now ms
ARGV[6] status stream MAXLEN (approximate)
ARGV[7] channels, ARGV[8] source, ARGV[9] start ms, ARGV[10] error code ("" when unknown)

Returns cjson {state, member} as recording_status.lua, or {error = "unknown conference"}.
]]
local conf, rec, recs, erased = KEYS[1], KEYS[2], KEYS[3], KEYS[6]
local st = { status = KEYS[4], pending = KEYS[5], maxlen = ARGV[6] }
local cf, rsid, twilio, duration, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local channels, source, start_ms, error_code = ARGV[7], ARGV[8], ARGV[9], ARGV[10]

if redis.call('EXISTS', conf) == 0 then
  return cjson.encode({ error = 'unknown conference' })
end
if redis.call('SISMEMBER', erased, rsid) == 1 then
  return cjson.encode({ state = 'erased', member = '' })
end

redis.call('HSET', rec, 'kind', 'recording', 'member', rsid, 'recording_sid', rsid,
  'rec_sid', rsid, 'conference_sid', cf, 'call_sid', '')
redis.call('HSETNX', rec, 'state', 'none')
if start_ms ~= '' then
  redis.call('ZADD', recs, 'NX', start_ms, rsid)
else
  redis.call('ZADD', recs, 'NX', now, rsid)
end

local state = redis.call('HGET', rec, 'state')
local known = redis.call('HGET', rec, 'rec_twilio')
if known == 'completed' then
  return cjson.encode({ state = state, member = rsid })
end
if twilio == 'in-progress' then
  if not known then redis.call('HSET', rec, 'rec_twilio', twilio) end
  return cjson.encode({ state = state, member = rsid })
end

redis.call('HSET', rec, 'rec_twilio', twilio)
if duration ~= '' then redis.call('HSET', rec, 'rec_duration', duration) end
if channels ~= '' then redis.call('HSET', rec, 'channels', channels) end
if source ~= '' then redis.call('HSET', rec, 'source', source) end
if start_ms ~= '' then redis.call('HSET', rec, 'rec_start_ms', start_ms) end
if error_code ~= '' then redis.call('HSET', rec, 'error_code', error_code) end

if twilio == 'completed' then
  if state == 'none' or state == 'failed' then
    set_state(st, rec, rsid, 'available', nil, nil)
  end
elseif state ~= 'ready' then
  if twilio == 'absent' then
    set_state(st, rec, rsid, 'none', nil, 'no recording at Twilio')
  else
    set_state(st, rec, rsid, 'failed', nil, 'recording failed at Twilio')
  end
end
return cjson.encode({ state = redis.call('HGET', rec, 'state'), member = rsid })
