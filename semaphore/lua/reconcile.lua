--[[
reconcile: the periodic repair of one business. Drops dead members (requeued at the
head), repairs a queue and its dedup set that a lost write left out of step, promotes.

KEYS[1..8], ARGV[1..6]: the slot layout (prelude.lua)

Returns JSON {verdict, active, queue_len, position, released, promoted, dropped, idle}:
  verdict "ok"; position 0; released false; promoted, dropped: as for request
  idle    nothing held, queued or pending: the caller may drop the business from its
          index of businesses with live work
]]
local c = slot_context()

local listed = {}
for _, s in ipairs(redis.call('LRANGE', c.queue, 0, -1)) do listed[s] = true end
-- SIDs the dedup set has but the queue lost: their keys are derived too, so they are
-- checked (prelude.lua, "Cluster safety") before the first write.
local unlisted, derived = {}, {}
for _, s in ipairs(redis.call('SMEMBERS', c.queued)) do
  if not listed[s] then
    unlisted[#unlisted + 1] = s
    derived[#derived + 1] = c.call_prefix .. s
    derived[#derived + 1] = c.lease_prefix .. s
  end
end
check_local(derived)
for _, s in ipairs(unlisted) do
  push_tail(c, s)
  if not redis.call('HGET', c.queued_at, s) then redis.call('HSET', c.queued_at, s, now_ms()) end
end
for s, _ in pairs(listed) do
  if redis.call('SISMEMBER', c.queued, s) == 0 then redis.call('SADD', c.queued, s) end
end
prune_and_promote(c)
announce_positions(c)
return slot_result(c, 'ok', 0, false)
