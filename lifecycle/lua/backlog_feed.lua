--[[
Hand a business's backlog (downloads a backfill asked for) to the slots, only while no
user is waiting: the user queue is empty and a slot is free.

SCARD counts members whose lease may have lapsed, so the free count is never
overestimated: a backlog request is admitted at once, never queued ahead of a click
that arrives later (except for a click racing this very call, at most `free` of them).

KEYS[1] rec_slots:{b}    SET    members holding a slot
KEYS[2] rec_queue:{b}    LIST   users' FIFO queue
KEYS[3] rec_backlog:{b}  LIST   backlog, oldest first
ARGV[1] max slots per business

Returns cjson {taken = [sid...], left = <backlog length after>}.
]]
local slots, queue, backlog = KEYS[1], KEYS[2], KEYS[3]
local max_slots = tonumber(ARGV[1])

local taken = {}
if redis.call('LLEN', queue) == 0 then
  local free = max_slots - redis.call('SCARD', slots)
  while free > 0 do
    local sid = redis.call('LPOP', backlog)
    if not sid then break end
    taken[#taken + 1] = sid
    free = free - 1
  end
end
local result = {left = redis.call('LLEN', backlog)}
-- cjson encodes an empty table as an object; the caller treats a missing list as none.
if #taken > 0 then result.taken = taken end
return cjson.encode(result)
