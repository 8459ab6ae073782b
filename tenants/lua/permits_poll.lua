--[[
poll: one process's check on its waiters; also its heartbeat. Frees the permits of dead
holders (lapsed leases) and hands free permits out, so a crashed worker's permits reach
the waiters without any release.

KEYS, common ARGV: see permits_prelude.lua.
ARGV[7]   proc      the polling process
ARGV[8..] id, b     its waiters on this account, each with its business

A process that stalled past proc_ttl_ms may have had waiters dropped by fill(); then
(and only then: LPOS is linear) each of its waiters neither granted nor in line goes
back at the head of its business's line, where it was the oldest.

Returns JSON {granted: [ids holding a permit now], in_use, limit, requeued: n}.
]]

local proc = ARGV[7]
alive(proc)
local requeued = 0
if redis.call('DEL', proc_prefix .. proc .. ':lapsed') == 1 then
  for i = #ARGV - 1, 8, -2 do
    local id, b = ARGV[i], ARGV[i + 1]
    local list = wait_prefix .. b
    if redis.call('EXISTS', permit_prefix .. id) == 0 and not redis.call('LPOS', list, id) then
      redis.call('LPUSH', list, id)
      if redis.call('LLEN', list) == 1 then redis.call('RPUSH', ring, b) end
      requeued = requeued + 1
    end
  end
end
local in_use = prune()
local _
_, in_use = fill(in_use)
local mine = {}
for i = 8, #ARGV, 2 do
  if redis.call('EXISTS', permit_prefix .. ARGV[i]) == 1 then
    mine[#mine + 1] = ARGV[i]
  end
end
return cjson.encode({granted = mine, in_use = in_use, limit = limit(), requeued = requeued})
