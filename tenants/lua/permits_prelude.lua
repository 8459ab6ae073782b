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
  KEYS[4..] the op's own keys, those the caller can name (its permit's lease, its
          business's wait list, its process's keys below): see each op's header
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

Cluster safety (as semaphore/lua/prelude.lua's slot scripts): the keys of other permits,
other businesses' waiters and other processes are found inside the script (prune, fill),
so the caller cannot declare them. While the account's slot migrates, the first command
on a key already moved (Valkey: on any undeclared key) fails the script, and Redis keeps
whatever it wrote before. So every op calls check_derived() before its first write: it
reads (EXISTS, LRANGE) every key the op may touch, which fails the script with nothing
written; the caller gets a transient error and retries. Covered: every permit's lease
(prune); and, when the op may hand permits out (`grants` > 0: the limit minus the live
permits, plus what the op itself frees), the first FILL_BUDGET businesses of the ring and
the first FILL_BUDGET (+ what the op pushes) waiters of each, with their leases and their
processes' liveness keys and grants inboxes. fill() stops after FILL_BUDGET turns and
FILL_BUDGET waiters popped (grants plus FILL_DROP_BUDGET dead waiters), so it never
reaches a key the check did not cover; the next call or poll hands out the rest.
]]

local permits, ring, rate = KEYS[1], KEYS[2], KEYS[3]
local permit_prefix, wait_prefix, proc_prefix = ARGV[1], ARGV[2], ARGV[3]
local max_limit = tonumber(ARGV[4])
local lease_ms = tonumber(ARGV[5])
local proc_ttl_ms = tonumber(ARGV[6])

-- Dead waiters fill() may drop per call, beyond the permits it may grant.
local FILL_DROP_BUDGET = 5
-- EXISTS takes this many keys per call (Lua's unpack has a stack limit).
local CHECK_BATCH = 500
-- Set by check_derived(): how far fill() may go (see "Cluster safety").
local fill_budget = 0

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Marks the process alive. A process that stalled longer than proc_ttl_ms finds its key
-- gone: fill() may have dropped its waiters meanwhile, so (when it has any: `waiting`)
-- its next poll says so and it puts them back.
-- key: the process's liveness key, lapsed: its marker (both in the op's KEYS).
local function alive(key, lapsed, waiting)
  if not redis.call('SET', key, '1', 'PX', proc_ttl_ms, 'GET') and waiting then
    redis.call('SET', lapsed, '1', 'PX', 60000)
  end
end

local function proc_of(id)
  return string.match(id, '^(.-)|')
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
  local inbox = proc_prefix .. proc_of(id) .. ':granted'
  redis.call('RPUSH', inbox, id)
  redis.call('PEXPIRE', inbox, 60000)
end

-- Reads every key this op may touch (see "Cluster safety"); call before any write.
-- own: the op's KEYS[4..]; frees: permits the op may free itself (its own, and one more
-- from an AIMD increase); pushes: business -> waiters the op may put in its line first.
local function check_derived(own, frees, pushes)
  local derived = {}
  for _, key in ipairs(own) do derived[#derived + 1] = key end
  local live = 0
  for _, id in ipairs(redis.call('SMEMBERS', permits)) do
    if redis.call('EXISTS', permit_prefix .. id) == 1 then live = live + 1 end
  end
  local grants = math.max(0, limit() - live) + frees
  fill_budget = grants > 0 and grants + FILL_DROP_BUDGET or 0
  if fill_budget > 0 then
    local windows = {}
    for b, n in pairs(pushes) do windows[b] = n end
    for _, b in ipairs(redis.call('LRANGE', ring, 0, fill_budget - 1)) do
      windows[b] = windows[b] or 0
    end
    for b, n in pairs(windows) do
      for _, id in ipairs(redis.call('LRANGE', wait_prefix .. b, 0, fill_budget + n - 1)) do
        derived[#derived + 1] = permit_prefix .. id
        local proc = proc_of(id)
        if proc then
          derived[#derived + 1] = proc_prefix .. proc
          derived[#derived + 1] = proc_prefix .. proc .. ':granted'
        end
      end
    end
  end
  for i = 1, #derived, CHECK_BATCH do
    redis.call('EXISTS', unpack(derived, i, math.min(i + CHECK_BATCH - 1, #derived)))
  end
end

-- Hand free permits out round robin: each turn takes the business at the ring's head,
-- grants its oldest waiter whose process is alive (dead ones are dropped), and puts the
-- business back at the tail while it still has waiters. At most fill_budget turns and
-- fill_budget waiters popped: the keys check_derived() read.
local function fill(in_use)
  local granted = {}
  local lim = limit()
  local turns, pops = 0, 0
  while in_use < lim and turns < fill_budget and pops < fill_budget do
    local b = redis.call('LPOP', ring)
    if not b then break end
    turns = turns + 1
    local list = wait_prefix .. b
    local id = nil
    while pops < fill_budget do
      local candidate = redis.call('LPOP', list)
      if not candidate then break end
      pops = pops + 1
      local proc = proc_of(candidate)
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
