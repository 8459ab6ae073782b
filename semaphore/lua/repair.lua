--[[
repair: requeue at the head the calls stuck in queued/processing with nothing left to
move them on (a done event handled but its retry never scheduled, a slot lost with
Redis's last second of AOF). A call counts as stuck when it is 'processing' without a
slot, or 'queued' without a queue entry, for longer than lease_ms.

KEYS[1..8], ARGV[1..6]: the slot layout (prelude.lua)
KEYS[9..] rec_call:{b}:<sid>     HASH   one per candidate, in the order of ARGV[7..]
ARGV[7..] candidate SIDs from KEYS[7] that the caller found without a delayed retry
          waiting (the delayed sets are per event-stream shard, outside this slot)

Returns JSON {verdict, active, queue_len, position, released, promoted, dropped, idle}:
  verdict "ok"; position the number of stuck calls requeued; released false;
  promoted, dropped, idle: as for request. Requeued calls are announced as queued with
  their positions, like every other operation's.
]]
local c = slot_context()
local repaired = 0

for i = 7, #ARGV do
  local s, call = ARGV[i], KEYS[i + 2]
  local state = redis.call('HGET', call, 'state')
  if state ~= 'queued' and state ~= 'processing' then
    redis.call('SREM', c.st.pending, s)
  else
    -- Leave transitions in progress alone (a release whose retry is being scheduled).
    local since = tonumber(redis.call('HGET', call, 'state_ms') or '0') or 0
    local in_slots = redis.call('SISMEMBER', c.slots, s) == 1
    local in_queue = redis.call('SISMEMBER', c.queued, s) == 1
    if now_ms() - since > c.lease_ms and not in_slots and not in_queue then
      push_head(c, s)
      repaired = repaired + 1
    end
  end
end
prune_and_promote(c)
announce_positions(c)
return slot_result(c, 'ok', repaired, false)
