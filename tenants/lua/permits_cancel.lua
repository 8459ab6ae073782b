--[[
cancel: a waiter gives up (its download was cancelled): leave b's list, and if a permit
was granted to it meanwhile, return that permit.

KEYS, common ARGV: see permits_prelude.lua.
ARGV[7] id   the waiter
ARGV[8] b    its business

Returns JSON {released: bool (it had been granted a permit), in_use, limit, others}.
]]

local id, b = ARGV[7], ARGV[8]
local list = wait_prefix .. b
redis.call('LREM', list, 0, id)
if redis.call('LLEN', list) == 0 then
  redis.call('LREM', ring, 0, b)
end
local released = redis.call('SREM', permits, id) == 1
redis.call('DEL', permit_prefix .. id)
local granted, in_use = fill(prune())
return cjson.encode({released = released, in_use = in_use, limit = limit(), others = granted})
