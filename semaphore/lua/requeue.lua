--[[
requeue: put a retry whose backoff ran out back at the head of its business's queue.

KEYS[1..8], ARGV[1..6]: the slot layout (prelude.lua)
KEYS[9] rec_call:{b}:<sid>   HASH   the recording's state (set to queued, with its
                                    position and ticket, by announce_positions)
ARGV[7] sid

Returns JSON {verdict, active, queue_len, position, released, promoted, dropped, idle}:
  verdict "ok"; position sid's place in the queue (0 when it took a slot at once, or
  already held one); released false; promoted, dropped, idle: as for request
]]
local c = slot_context()
local sid = ARGV[7]

if redis.call('SISMEMBER', c.slots, sid) == 0 then
  if redis.call('SISMEMBER', c.queued, sid) == 1 then
    redis.call('LREM', c.queue, 0, sid)
    redis.call('HDEL', c.tickets, sid)
  end
  push_head(c, sid)
end
prune_and_promote(c)
announce_positions(c)
return slot_result(c, 'ok', position_of(c, sid), false)
