--[[
forget_business: drop a business from the index of businesses with live work, unless
work was noted for it since the caller read its generation.

Callers note work (HINCRBY) after each slot script that may create some, so a request
whose script ran after the reconciler found the business idle has bumped the
generation by the time the reconciler asks to forget it: it stays. Only the global
index is touched (one key, so one cluster slot).

KEYS[1] rec_live_businesses   HASH  business id -> generation
ARGV[1] business id
ARGV[2] generation read before the business was found idle

Returns 1 when dropped, 0 when kept.
]]
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
