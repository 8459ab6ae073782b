--[[
acquire: ask for a permit for one request of business b on this account.

KEYS[1..3], common ARGV: see permits_prelude.lua.
KEYS[4] tw_proc:{tw:A}:<proc>           the caller's liveness key
KEYS[5] tw_proc:{tw:A}:<proc>:lapsed    its lapsed marker
KEYS[6] tw_proc:{tw:A}:<proc>:granted   its grants inbox (fill may grant id itself)
KEYS[7] tw_wait:{tw:A}:<b>              b's wait list
KEYS[8] tw_permit:{tw:A}:<id>           id's lease
ARGV[7] id      waiter/permit id "<proc>|<n>"
ARGV[8] b       business id
ARGV[9] front   "1": wait at the head of b's list (a request coming back after a 429
                keeps its place in b's FIFO), "0": at the tail
ARGV[10] waiting "1" when the process has other waiters on this account (then a lapsed
                liveness key is noted for its next poll)

Returns JSON {granted: bool (id holds a permit now), in_use, limit, others: [ids]}:
  others are waiters of any process granted during this call (the caller resolves its
  own at once; other processes find theirs when they poll).
]]

local id, b, front = ARGV[7], ARGV[8], ARGV[9] == '1'
local list = KEYS[7]
check_derived({KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]}, 0, {[b] = 1})
alive(KEYS[4], KEYS[5], ARGV[10] == '1')
local in_use = prune()
if redis.call('LLEN', ring) == 0 and in_use < limit() then
  grant(id, b)
  return cjson.encode({granted = true, in_use = in_use + 1, limit = limit(), others = {}})
end
if front then redis.call('LPUSH', list, id) else redis.call('RPUSH', list, id) end
if redis.call('LLEN', list) == 1 then
  redis.call('RPUSH', ring, b)
end
local granted
granted, in_use = fill(in_use)
local mine = redis.call('EXISTS', KEYS[8]) == 1
return cjson.encode({granted = mine, in_use = in_use, limit = limit(), others = granted})
