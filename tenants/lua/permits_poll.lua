--[[
poll: one process's look at its grants; also its heartbeat. Frees the permits of dead
holders (lapsed leases) and hands free permits out, so a crashed worker's permits reach
the waiters without any release.

KEYS, common ARGV: see permits_prelude.lua.
ARGV[7] proc   the polling process

Returns JSON {granted: [ids of its waiters granted since its last poll; some may have
been woken already], lapsed: bool (its liveness key had lapsed: fill() may have dropped
some of its waiters, which it puts back with the requeue op), in_use, limit}.
]]

local proc = ARGV[7]
alive(proc, true)
local lapsed = redis.call('DEL', proc_prefix .. proc .. ':lapsed') == 1
local in_use = prune()
local _
_, in_use = fill(in_use)
local inbox = proc_prefix .. proc .. ':granted'
local granted = redis.call('LRANGE', inbox, 0, -1)
redis.call('DEL', inbox)
return cjson.encode({granted = granted, lapsed = lapsed, in_use = in_use, limit = limit()})
