--[[
mark_ready: the recording is in storage; say so (once: watchers get one "ready" event
however many callers find the file).

Runs behind prelude.lua (semaphore/lua), for its set_state.

KEYS[1] rec_call:{b}:<sid>   HASH   the recording's state
KEYS[2] rec_status:{b}       STREAM status changes for SSE
KEYS[3] rec_pending:{b}      SET    calls in queued/processing (left by a ready one)
ARGV[1] sid
ARGV[2] status stream MAXLEN (approximate)

Returns JSON {previous}: the state before (nil when the call was unknown).
]]
local previous = redis.call('HGET', KEYS[1], 'state')
set_state({ status = KEYS[2], pending = KEYS[3], maxlen = ARGV[2] }, KEYS[1], ARGV[1], 'ready', nil, nil)
return cjson.encode({ previous = previous or cjson.null })
