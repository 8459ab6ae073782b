--[[
requeue: a process that stalled past its liveness puts back in line those of its
waiters that fill() dropped meanwhile (neither granted nor in line), each at the head
of its business's line, where it was the oldest. Linear in the lines' lengths (LPOS):
only run after a poll said "lapsed".

KEYS[1..3], common ARGV: see permits_prelude.lua.
KEYS[4]   tw_proc:{tw:A}:<proc>           its liveness key
KEYS[5]   tw_proc:{tw:A}:<proc>:lapsed    its lapsed marker (not written here)
KEYS[6]   tw_proc:{tw:A}:<proc>:granted   its grants inbox (fill may grant its waiters)
KEYS[7..] per waiter of ARGV[8..], in order: tw_permit:{tw:A}:<id> (its lease),
          tw_wait:{tw:A}:<b> (its business's wait list)
ARGV[7]   proc   the process
ARGV[8..] id, b  its waiters on this account whose acquire has returned (never one
                 still in flight: it could be put in line twice), with their businesses

Returns JSON {requeued: n, in_use, limit, others: [ids granted during this call]}.
]]

local own, pushes = {KEYS[4], KEYS[5], KEYS[6]}, {}
for i = 8, #ARGV - 1, 2 do
  pushes[ARGV[i + 1]] = (pushes[ARGV[i + 1]] or 0) + 1
end
for i = 7, #KEYS do own[#own + 1] = KEYS[i] end
check_derived(own, 0, pushes)
alive(KEYS[4], KEYS[5], false)
local requeued = 0
for i = #ARGV - 1, 8, -2 do
  -- ARGV[8 + 2k], ARGV[9 + 2k] name KEYS[7 + 2k] (lease), KEYS[8 + 2k] (wait list).
  local id, b = ARGV[i], ARGV[i + 1]
  local lease, list = KEYS[i - 1], KEYS[i]
  if redis.call('EXISTS', lease) == 0 and not redis.call('LPOS', list, id) then
    redis.call('LPUSH', list, id)
    if redis.call('LLEN', list) == 1 then redis.call('RPUSH', ring, b) end
    requeued = requeued + 1
  end
end
local granted, in_use = fill(prune())
return cjson.encode({requeued = requeued, in_use = in_use, limit = limit(), others = granted})
