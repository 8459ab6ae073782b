--[[
Apply a Twilio recording status callback to the call it belongs to.

Idempotent under redelivery; never downgrades: once Twilio said "completed", a late
"in-progress" changes nothing, a redelivered "completed" changes nothing (a recording
given up on, "failed" and dead-lettered, stays failed: only a person asking again, or an
operator requeueing the dead letter, fetches it again), and a stored recording ("ready")
stays ready.

Runs behind prelude.lua (semaphore/lua): state changes go through its set_state.

KEYS[1] rec_call:{b}:<sid>   HASH   the call; fields written: rec_sid, rec_twilio
                                    (Twilio's RecordingStatus), rec_duration, state, reason
KEYS[2] rec_calls:{b}        ZSET   listing index (a recording may arrive before the call)
KEYS[3] rec_status:{b}       STREAM status changes for SSE
KEYS[4] rec_pending:{b}      SET    calls in queued/processing (set_state keeps it)
ARGV[1] call_sid
ARGV[2] recording_sid ("" when Twilio sent none)
ARGV[3] RecordingStatus: in-progress | completed | absent | failed
ARGV[4] duration seconds ("" when unknown)
ARGV[5] now ms, used as started_at only if the call was never seen
ARGV[6] status stream MAXLEN (approximate)

Returns the recording's state after the callback (none|available|queued|processing|ready|failed).
]]
local call, index = KEYS[1], KEYS[2]
local states = { status = KEYS[3], pending = KEYS[4], maxlen = ARGV[6] }
local sid, rec_sid, twilio, duration = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

if redis.call('ZADD', index, 'NX', ARGV[5], sid) == 1 then
  redis.call('HSET', call, 'call_sid', sid, 'started_at', ARGV[5])
end
local state = redis.call('HGET', call, 'state') or 'none'
local known = redis.call('HGET', call, 'rec_twilio')

local function change(new_state, reason)
  if new_state ~= state then
    state = new_state
    set_state(states, call, sid, state, nil, reason)
  elseif reason then
    redis.call('HSET', call, 'reason', reason)
  end
end

if twilio == 'in-progress' then
  if not known then redis.call('HSET', call, 'rec_twilio', twilio) end
  redis.call('HSETNX', call, 'state', 'none')
  return state
end

if known == 'completed' then
  -- A late absent/failed never downgrades; a redelivered completed is a replay.
  return state
end

redis.call('HSET', call, 'rec_twilio', twilio)
if rec_sid ~= '' then redis.call('HSET', call, 'rec_sid', rec_sid) end
if duration ~= '' then redis.call('HSET', call, 'rec_duration', duration) end

if twilio == 'completed' then
  if state == 'none' or state == 'failed' then change('available', nil) end
elseif state ~= 'ready' then
  if twilio == 'absent' then
    change('none', 'no recording at Twilio')
  else
    change('failed', 'recording failed at Twilio')
  end
end
return state
