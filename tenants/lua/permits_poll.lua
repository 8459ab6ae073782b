--[[
poll: one process's look at its grants; also its heartbeat. Frees the permits of dead
holders (lapsed leases) and hands free permits out, so a crashed worker's permits reach
the waiters without any release.

KEYS[1..3], common ARGV: see permits_prelude.lua.
KEYS[4] tw_proc:{tw:A}:<proc>           its liveness key
KEYS[5] tw_proc:{tw:A}:<proc>:lapsed    its lapsed marker
KEYS[6] tw_proc:{tw:A}:<proc>:granted   its grants inbox
ARGV[7] proc   the polling process

Returns JSON {granted: [ids of its waiters granted since its last poll; some may have
been woken already], lapsed: bool (its liveness key had lapsed: fill() may have dropped
some of its waiters, which it puts back with the requeue op), in_use, limit}.
]]

check_derived({KEYS[4], KEYS[5], KEYS[6]}, 0, {})
alive(KEYS[4], KEYS[5], true)
local lapsed = redis.call('DEL', KEYS[5]) == 1
local in_use = prune()
local _
_, in_use = fill(in_use)
local inbox = KEYS[6]
local granted = redis.call('LRANGE', inbox, 0, -1)
redis.call('DEL', inbox)
return cjson.encode({granted = granted, lapsed = lapsed, in_use = in_use, limit = limit()})
