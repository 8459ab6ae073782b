--[[
request: take a slot for a SID now, or queue it FIFO; idempotent per SID.

KEYS[1..8], ARGV[1..6]: the slot layout (prelude.lua)
KEYS[9] rec_call:{b}:<sid>       HASH   the recording's state
KEYS[10] rec_inflight:{b}:<sid>  STRING its lease, if it holds a slot
ARGV[7] sid

Returns JSON {verdict, active, queue_len, position, released, promoted, dropped, idle}:
  verdict   "admitted" (sid took a slot now), "queued" (sid waits), "active" (sid already
            holds a live slot), "waiting" (sid was already queued). Callers check storage
            first: the script cannot see files.
  position  1-based place of sid in the queue, 0 when not queued
  released  false
  promoted  [{sid, token}] that took a slot during this call, in FIFO order (sid itself
            when admitted); the caller starts their downloads
  dropped   SIDs removed from the queue because they waited longer than queued_ttl_ms
  idle      nothing held, queued or pending for the business after this call
]]
local c = slot_context()
local call, lease, sid = KEYS[9], KEYS[10], ARGV[7]
local verdict = 'ok'
local pruned = false

if redis.call('SISMEMBER', c.slots, sid) == 1 and redis.call('EXISTS', lease) == 1 then
  verdict = 'active'
elseif redis.call('SISMEMBER', c.queued, sid) == 1 then
  verdict = 'waiting'
else
  prune(c)
  pruned = true
  if redis.call('SISMEMBER', c.queued, sid) == 1 then
    -- sid was a dead member: prune put it back at the head, where it keeps its turn
    -- (queueing it at the tail too would admit it twice).
    verdict = 'waiting'
  else
    -- A fresh request for a recording that failed (attempts used up, or expired in the
    -- queue) is a person asking again: it gets a full set of attempts.
    if redis.call('HGET', call, 'state') == 'failed' then
      redis.call('HDEL', call, 'attempts', 'reason')
    end
    push_tail(c, sid)
    redis.call('HSET', c.queued_at, sid, now_ms())
    verdict = 'queued'
  end
end
-- Nothing can have died between the prune above and here (one script runs at a time).
if pruned then promote(c) else prune_and_promote(c) end
for _, a in ipairs(c.promoted) do
  if a.sid == sid then verdict = 'admitted' end
end
-- Its own "queued" state, with its place and ticket, once it is known to wait (an
-- admitted request's watchers see "processing" alone).
local position = position_of(c, sid)
if verdict == 'queued' and position > 0 then
  set_state(c.st, call, sid, 'queued', position, nil, ticket_of(c, sid))
end
announce_positions(c)
return slot_result(c, verdict, position, false)
