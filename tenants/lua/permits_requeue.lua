--[[
requeue: a process that stalled past its liveness puts back in line those of its
waiters that fill() dropped meanwhile (neither granted nor in line), each at the head
of its business's line, where it was the oldest. Linear in the lines' lengths (LPOS):
only run after a poll said "lapsed".

KEYS, common ARGV: see permits_prelude.lua.
ARGV[7]   proc   the process
ARGV[8..] id, b  its waiters on this account whose acquire has returned (never one
                 still in flight: it could be put in line twice), with their businesses

Returns JSON {requeued: n, in_use, limit, others: [ids granted during this call]}.
]]

alive(ARGV[7], false)
local requeued = 0
for i = #ARGV - 1, 8, -2 do
  local id, b = ARGV[i], ARGV[i + 1]
  local list = wait_prefix .. b
  if redis.call('EXISTS', permit_prefix .. id) == 0 and not redis.call('LPOS', list, id) then
    redis.call('LPUSH', list, id)
    if redis.call('LLEN', list) == 1 then redis.call('RPUSH', ring, b) end
    requeued = requeued + 1
  end
end
local granted, in_use = fill(prune())
return cjson.encode({requeued = requeued, in_use = in_use, limit = limit(), others = granted})
