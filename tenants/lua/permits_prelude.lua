--[[
Shared prelude of the account permit scripts (permits_*.lua): the Python side prepends
it to each op's file, so every script below starts with these definitions.

At most `limit` Twilio requests run at once per Twilio account, across every worker and
host. A permit is a member of a SET that counts only while its lease key exists (a
killed worker's permits come back when their leases lapse). Waiting requests queue per
business (FIFO) and the businesses waiting on an account take turns (a ring, round
robin), so a business with thousands queued never starves a neighbour with one.

KEYS (all share the hash tag {tw:<account sid>}, so one account is one cluster slot):
  KEYS[1] tw_permits:{tw:A}   SET    permit ids in flight (valid while their lease lives)
  KEYS[2] tw_ring:{tw:A}      LIST   businesses with waiters, served round robin; a
                                     business is in it exactly when its wait list is
                                     not empty
  KEYS[3] tw_rate:{tw:A}      HASH   limit (effective concurrency, AIMD), ok (successes
                                     since the last change), cut_ms (time of the last
                                     decrease), throttled (429s seen, a counter)
  derived (same hash tag; which ones a call touches depends on who is waiting):
    ARGV[1] .. id    tw_permit:{tw:A}:<id>  STRING lease of a permit, value = business
    ARGV[2] .. b     tw_wait:{tw:A}:<b>     LIST   waiter ids of business b, FIFO
    ARGV[3] .. proc  tw_proc:{tw:A}:<proc>  STRING the waiters of process proc are alive
                                            while this exists (its poller renews it)
    ARGV[3] .. proc .. ':lapsed'            STRING set when that key was found gone: the
                                            process's waiters may have been dropped, its
                                            next poll says so and the process requeues them
    ARGV[3] .. proc .. ':granted'           LIST   ids of the process's waiters granted a
                                            permit since its last poll (so a poll costs
                                            O(grants), not a check of every waiter)
ARGV (common):
  ARGV[1..3] the prefixes above
  ARGV[4] max_limit     TWILIO_MAX_CONCURRENT_PER_ACCOUNT
  ARGV[5] lease_ms      lease of a permit
  ARGV[6] proc_ttl_ms   lease of a process's liveness key
  ARGV[7..] per op (see each op's header)
Waiter and permit ids are "<proc>|<n>": the process part finds the liveness key.
Results are JSON objects (cjson), fields named in each op's header.
Time is Redis's (TIME), never the callers'.
]]

local permits, ring, rate = KEYS[1], KEYS[2], KEYS[3]
local permit_prefix, wait_prefix, proc_prefix = ARGV[1], ARGV[2], ARGV[3]
local max_limit = tonumber(ARGV[4])
local lease_ms = tonumber(ARGV[5])
local proc_ttl_ms = tonumber(ARGV[6])

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Marks the process alive. A process that stalled longer than proc_ttl_ms finds its key
-- gone: fill() may have dropped its waiters meanwhile, so (when it has any: `waiting`)
-- its next poll says so and it puts them back.
local function alive(proc, waiting)
  local key = proc_prefix .. proc
  if not redis.call('SET', key, '1', 'PX', proc_ttl_ms, 'GET') and waiting then
    redis.call('SET', key .. ':lapsed', '1', 'PX', 60000)
  end
end

-- Members whose lease lapsed (their worker died or stalled) no longer count.
local function prune()
  for _, id in ipairs(redis.call('SMEMBERS', permits)) do
    if redis.call('EXISTS', permit_prefix .. id) == 0 then
      redis.call('SREM', permits, id)
    end
  end
  return redis.call('SCARD', permits)
end

-- The effective limit: AIMD's value, never above the configured maximum (which may have
-- been lowered since it was stored) nor below 1.
local function limit()
  local l = tonumber(redis.call('HGET', rate, 'limit'))
  if not l or l > max_limit then return max_limit end
  if l < 1 then return 1 end
  return l
end

local function grant(id, b)
  redis.call('SADD', permits, id)
  redis.call('SET', permit_prefix .. id, b, 'PX', lease_ms)
end

-- A waiter granted by someone else's call: its process finds it at its next poll.
local function tell(id)
  local inbox = proc_prefix .. string.match(id, '^(.-)|') .. ':granted'
  redis.call('RPUSH', inbox, id)
  redis.call('PEXPIRE', inbox, 60000)
end

-- Hand free permits out round robin: each turn takes the business at the ring's head,
-- grants its oldest waiter whose process is alive (dead ones are dropped), and puts the
-- business back at the tail while it still has waiters.
local function fill(in_use)
  local granted = {}
  local lim = limit()
  while in_use < lim do
    local b = redis.call('LPOP', ring)
    if not b then break end
    local list = wait_prefix .. b
    local id = nil
    while true do
      local candidate = redis.call('LPOP', list)
      if not candidate then break end
      local proc = string.match(candidate, '^(.-)|')
      if proc and redis.call('EXISTS', proc_prefix .. proc) == 1 then
        id = candidate
        break
      end
    end
    if id then
      grant(id, b)
      tell(id)
      in_use = in_use + 1
      granted[#granted + 1] = id
    end
    if redis.call('LLEN', list) > 0 then
      redis.call('RPUSH', ring, b)
    end
  end
  return granted, in_use
end
-- (cjson encodes an empty list as {}: the Python side reads {} as an empty list.)
