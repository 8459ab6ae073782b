--[[
Claim up to ARGV[2] members of a due-time ZSET whose time has come, pushing each one's
time ARGV[1] ms ahead: a worker that dies holding it lets it come due again then, and
two workers never take the same member at once.

KEYS[1] ZSET member -> due time (ms, Redis clock)
ARGV[1] lease ms
ARGV[2] limit

Returns cjson {claimed = [member...]} (the key is missing when none was due).
]]
local zset = KEYS[1]
local lease_ms, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local due = redis.call('ZRANGEBYSCORE', zset, '-inf', now_ms, 'LIMIT', 0, limit)
for _, member in ipairs(due) do
  redis.call('ZADD', zset, 'XX', now_ms + lease_ms, member)
end
local result = {}
if #due > 0 then result.claimed = due end
return cjson.encode(result)
