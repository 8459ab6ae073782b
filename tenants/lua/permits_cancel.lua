--[[
cancel: a waiter gives up (its download was cancelled): leave b's list, and if a permit
was granted to it meanwhile, return that permit.

KEYS[1..3], common ARGV: see permits_prelude.lua.
KEYS[4] tw_wait:{tw:A}:<b>      b's wait list
KEYS[5] tw_permit:{tw:A}:<id>   id's lease
ARGV[7] id   the waiter
ARGV[8] b    its business

Returns JSON {released: bool (it had been granted a permit), in_use, limit, others}.
]]

local id, b = ARGV[7], ARGV[8]
local list = KEYS[4]
check_derived({KEYS[4], KEYS[5]}, 1, {})
redis.call('LREM', list, 0, id)
if redis.call('LLEN', list) == 0 then
  redis.call('LREM', ring, 0, b)
end
local released = redis.call('SREM', permits, id) == 1
redis.call('DEL', KEYS[5])
local granted, in_use = fill(prune())
return cjson.encode({released = released, in_use = in_use, limit = limit(), others = granted})
