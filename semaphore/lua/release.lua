--[[
release: free a SID's slot if the caller's fencing token still holds it, record how its
download ended, then promote the next ones.

KEYS[1..8], ARGV[1..6]: the slot layout (prelude.lua)
KEYS[9] rec_call:{b}:<sid>       HASH   the recording's state
KEYS[10] rec_inflight:{b}:<sid>  STRING its lease
ARGV[7] sid
ARGV[8] token                    the fencing token of the admission that ended
ARGV[9] outcome                  "ready" | "failed" | "retry" | "none" | "erased"

Returns JSON {verdict, active, queue_len, position, released, promoted, dropped, idle}:
  verdict "ok"; position 0
  released true when this call freed sid's slot (release is idempotent: a second call, or
           one with a stale token, frees nothing). "ready" is recorded either way (the
           file is stored); other outcomes only by the holder.
  promoted, dropped, idle: as for request
]]
local c = slot_context()
local call, lease, sid, token, outcome = KEYS[9], KEYS[10], ARGV[7], ARGV[8], ARGV[9]
local released = false

local held = redis.call('GET', lease)
-- Fencing: only the holder of the current token frees the slot. A lapsed lease with the
-- member still present is freed too (it is dead either way); a newer token is not ours.
if held == token or (not held and redis.call('SISMEMBER', c.slots, sid) == 1) then
  redis.call('DEL', lease)
  redis.call('SREM', c.slots, sid)
  released = true
end
if outcome == 'ready' then
  set_state(c.st, call, sid, 'ready', nil, nil)
elseif released then
  if outcome == 'retry' then
    -- Waits out its backoff in the caller's delayed set, then comes back via requeue.
    set_state(c.st, call, sid, 'queued', nil, nil)
  else
    set_state(c.st, call, sid, outcome, nil, nil)
  end
end
prune_and_promote(c)
announce_positions(c)
return slot_result(c, 'ok', 0, released)
