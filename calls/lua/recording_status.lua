--[[
Apply a Twilio recording status callback for a recording of a call (it names CallSid).

Every recording is a record of its own, rec_call:{b}:<recording_sid> (KEYS[5]): Twilio's
status, duration, channels, source, start time, error code. The call's primary
recording is the first of its own recordings to complete; once chosen it never
changes, its state lives in the call's hash (the slot member is the call SID) and it is
stored as <call_sid>.mp3. Any other recording is its own slot member (its SID), with
its state in its own record, stored as <recording_sid>.mp3.

Idempotent under redelivery; never downgrades: once Twilio said "completed" for a
recording, a late or replayed callback for it changes nothing. An erased call or
recording (a tombstone in KEYS[7]) is never touched again.

Runs behind the shared set_state (prelude).

KEYS[1] rec_call:{b}:<call_sid>       HASH   the call; for its primary: rec_sid, rec_twilio,
                                             rec_duration, channels, source, rec_start_ms,
                                             error_code, state, reason
KEYS[2] rec_calls:{b}                 ZSET   listing index (a recording may come first)
KEYS[3] rec_status:{b}                STREAM status changes for SSE
KEYS[4] rec_pending:{b}               SET    members in queued/processing (set_state)
KEYS[5] rec_call:{b}:<recording_sid>  HASH   the recording (KEYS[1] again when ARGV[2] is "")
KEYS[6] rec_call_recs:{b}:<call_sid>  ZSET   the call's own recordings by start time
KEYS[7] rec_erased:{b}                SET    tombstones
ARGV[1] call_sid
ARGV[2] recording_sid ("" when Twilio sent none: then only the call's fields change)
ARGV[3] RecordingStatus: in-progress | completed | absent | failed
ARGV[4] duration seconds ("" when unknown)
ARGV[5] now ms (started_at of a call never seen; start of a recording without one)
ARGV[6] status stream MAXLEN (approximate)
ARGV[7] channels ("" when unknown)
ARGV[8] source ("" when unknown)
ARGV[9] recording start ms ("" when unknown)
ARGV[10] error code ("" when none)

Returns cjson {state, member}: the state of the recording's slot member after the
callback, and that member (the call SID for the primary, else the recording SID; "" for
an erased one).
]]
local call, index, rec, recs, erased = KEYS[1], KEYS[2], KEYS[5], KEYS[6], KEYS[7]
local st = { status = KEYS[3], pending = KEYS[4], maxlen = ARGV[6] }
local sid, rsid, twilio, duration, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local channels, source, start_ms, error_code = ARGV[7], ARGV[8], ARGV[9], ARGV[10]

if redis.call('SISMEMBER', erased, sid) == 1
  or (rsid ~= '' and redis.call('SISMEMBER', erased, rsid) == 1) then
  return cjson.encode({ state = 'erased', member = '' })
end
if redis.call('ZADD', index, 'NX', now, sid) == 1 then
  redis.call('HSET', call, 'call_sid', sid, 'started_at', now)
end
redis.call('HSETNX', call, 'state', 'none')

local function meta(key)
  if duration ~= '' then redis.call('HSET', key, 'rec_duration', duration) end
  if channels ~= '' then redis.call('HSET', key, 'channels', channels) end
  if source ~= '' then redis.call('HSET', key, 'source', source) end
  if start_ms ~= '' then redis.call('HSET', key, 'rec_start_ms', start_ms) end
  if error_code ~= '' then redis.call('HSET', key, 'error_code', error_code) end
end

local function state_of(key)
  return redis.call('HGET', key, 'state') or 'none'
end

local function unavailable(key, member)
  local reason = 'recording failed at Twilio'
  local word = 'failed'
  if twilio == 'absent' then reason, word = 'no recording at Twilio', 'none' end
  if state_of(key) ~= 'ready' then set_state(st, key, member, word, nil, reason) end
end

local primary = redis.call('HGET', call, 'rec_sid')
local call_known = redis.call('HGET', call, 'rec_twilio')

if rsid == '' then
  -- Nothing names the recording: the call's own fields say what Twilio said.
  if twilio == 'in-progress' then
    if not call_known then redis.call('HSET', call, 'rec_twilio', twilio) end
  elseif call_known ~= 'completed' then
    redis.call('HSET', call, 'rec_twilio', twilio)
    meta(call)
    if twilio == 'completed' then
      local s = state_of(call)
      if s == 'none' or s == 'failed' then set_state(st, call, sid, 'available', nil, nil) end
    else
      unavailable(call, sid)
    end
  end
  return cjson.encode({ state = state_of(call), member = sid })
end

redis.call('HSET', rec, 'kind', 'recording', 'member', rsid, 'recording_sid', rsid,
  'rec_sid', rsid, 'call_sid', sid)
redis.call('HSETNX', rec, 'state', 'none')
if start_ms ~= '' then
  redis.call('ZADD', recs, 'NX', start_ms, rsid)
else
  redis.call('ZADD', recs, 'NX', now, rsid)
end
local known = redis.call('HGET', rec, 'rec_twilio')

if known == 'completed' then
  -- A replay, or a late callback of an older status: nothing changes.
  if primary == rsid then return cjson.encode({ state = state_of(call), member = sid }) end
  return cjson.encode({ state = state_of(rec), member = rsid })
end

if twilio == 'in-progress' then
  if not known then redis.call('HSET', rec, 'rec_twilio', twilio) end
  meta(rec)
  -- The call has a recording of its own on the way (a <Dial> parent plays its own).
  if not call_known then redis.call('HSET', call, 'rec_twilio', twilio) end
  return cjson.encode({ state = state_of(rec), member = rsid })
end

redis.call('HSET', rec, 'rec_twilio', twilio)
meta(rec)

if twilio == 'completed' then
  if not primary then
    -- The first of the call's own recordings to complete: its primary, for good.
    primary = rsid
    redis.call('HSET', call, 'rec_sid', rsid, 'rec_twilio', 'completed')
    redis.call('HDEL', call, 'error_code', 'reason')
    meta(call)
    redis.call('HSET', rec, 'primary', '1')
  end
  if primary == rsid then
    local s = state_of(call)
    if s == 'none' or s == 'failed' then set_state(st, call, sid, 'available', nil, nil) end
    return cjson.encode({ state = state_of(call), member = sid })
  end
  local s = state_of(rec)
  if s == 'none' or s == 'failed' then set_state(st, rec, rsid, 'available', nil, nil) end
  return cjson.encode({ state = state_of(rec), member = rsid })
end

unavailable(rec, rsid)
if not primary and call_known ~= 'completed' then
  -- No recording of its own yet: the call shows why (too short, silent...).
  redis.call('HSET', call, 'rec_twilio', twilio)
  meta(call)
  unavailable(call, sid)
end
return cjson.encode({ state = state_of(rec), member = rsid })
