--[[
poll: one process's check on its waiters; also its heartbeat. Frees the permits of dead
holders (lapsed leases) and hands free permits out, so a crashed worker's permits reach
the waiters without any release.

KEYS, common ARGV: see permits_prelude.lua.
ARGV[7]   proc   the polling process
ARGV[8..] ids    its waiters on this account

Returns JSON {granted: [ids of ARGV[8..] holding a permit now], in_use, limit}.
]]

alive(ARGV[7])
local in_use = prune()
local _
_, in_use = fill(in_use)
local mine = {}
for i = 8, #ARGV do
  if redis.call('EXISTS', permit_prefix .. ARGV[i]) == 1 then
    mine[#mine + 1] = ARGV[i]
  end
end
return cjson.encode({granted = mine, in_use = in_use, limit = limit()})
