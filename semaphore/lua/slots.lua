--[[
Per-business download slots: admission, FIFO queue, release-and-promote, repair.

One script for every operation so that pruning and promotion, which each operation
ends with, exist once. Everything runs on Redis's clock (TIME), never the callers'.

Key layout (all share the hash tag {b}, so one business is one cluster slot):
  KEYS[1] rec_slots:{b}        SET   call SIDs holding a slot; a member counts only while
                                     its lease key exists
  KEYS[2] rec_queue:{b}        LIST  call SIDs waiting, FIFO (RPUSH tail, LPOP head)
  KEYS[3] rec_queued:{b}       SET   mirror of KEYS[2] for O(1) dedup
  KEYS[4] rec_queued_at:{b}    HASH  sid -> enqueue time in ms
  KEYS[5] rec_fence:{b}        STRING INCR counter; each admission's fencing token
  KEYS[6] rec_status:{b}       STREAM status changes for SSE (MAXLEN ~ 1000)
  KEYS[7] rec_pending:{b}      SET   calls whose state this script last set to queued or
                                     processing: where the repair op looks for stuck ones
                                     (a superset: members in another state are dropped
                                     lazily by repair)
  derived (same hash tag, so the same cluster slot):
    ARGV[3] .. sid  = rec_inflight:{b}:<sid>  STRING lease, value = fencing token, PX lease_ms
    ARGV[4] .. sid  = rec_call:{b}:<sid>      HASH   field "state" is the recording's status

ARGV (common):
  ARGV[1] op            "request" | "release" | "requeue" | "reconcile" | "repair"
  ARGV[2] max_slots
  ARGV[3] inflight key prefix   ("rec_inflight:{b}:")
  ARGV[4] call key prefix       ("rec_call:{b}:")
  ARGV[5] lease_ms
  ARGV[6] queued_ttl_ms         queued entries older than this are dropped as stale
ARGV (per op):
  request   ARGV[7] sid
  release   ARGV[7] sid, ARGV[8] token, ARGV[9] outcome ("ready"|"failed"|"retry"|"none")
  requeue   ARGV[7] sid            (a retry whose backoff ran out: back in at the head)
  reconcile (none)
  repair    ARGV[7..] sids to check: candidates from KEYS[7] that the caller found
            without a delayed retry waiting (rec_delayed is global, so outside this
            script's hash slot). A call left 'processing' without a slot, or 'queued'
            without a queue entry, for longer than lease_ms goes back to the head of
            the queue: the event that would have moved it on was lost.

Status events (KEYS[6], read by /api/events): every state change of a SID is one entry
  (sid, status, position). A queued SID's position changes when the head of the queue
  moves (promotion, a drop, a request put back at the head). Then, before returning, the
  script adds a "queued" entry with the new position for each of the first POSITION_BOUND
  (50) waiting SIDs, so pages watching them stay right. SIDs further back learn their place
  once they move into that window (or by asking /recording/status): this keeps the script's
  work bounded (one LRANGE of 50 and at most 50 XADDs per call) however long a queue gets.
  A request added at the tail moves nobody and adds only its own entry.

Returns a flat array:
  { verdict, active, queue_len, position, released, n_promoted, sid1, token1, ...,
    n_dropped, dropped_sid1, ... }
  verdict  request: "admitted" (sid took a slot now), "queued" (sid waits), "active"
           (sid already holds a live slot), "waiting" (sid was already queued).
           Callers check storage first: the script cannot see files.
           release/requeue/reconcile/repair: "ok"
  position 1-based place of sid in the queue, 0 when not queued; for repair, the
           number of stuck calls requeued
  released 1 when this call freed sid's slot (release is idempotent: a second call, or
           one with a stale token, frees nothing and returns 0)
  promoted (sid, token) pairs that took a slot during this call, in FIFO order; the
           caller emits a start event for each (a lost start is repaired: its lease
           lapses and the member is requeued at the head)
  dropped  SIDs removed from the queue because they waited longer than queued_ttl_ms
]]

local slots, queue, queued, queued_at, fence, status = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local pending = KEYS[7]
local op = ARGV[1]
local max_slots = tonumber(ARGV[2])
local lease_prefix, call_prefix = ARGV[3], ARGV[4]
local lease_ms, queued_ttl_ms = tonumber(ARGV[5]), tonumber(ARGV[6])

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function set_state(sid, state, position)
  redis.call('HSET', call_prefix .. sid, 'state', state, 'state_ms', now_ms)
  if state == 'queued' or state == 'processing' then
    redis.call('SADD', pending, sid)
  else
    redis.call('SREM', pending, sid)
  end
  redis.call('XADD', status, 'MAXLEN', '~', '1000', '*',
    'sid', sid, 'status', state, 'position', tostring(position or ''))
end

local POSITION_BOUND = 50
-- Set when the head of the queue moved: every waiting SID's position changed.
local head_moved = false

local function push_head(sid)
  redis.call('LPUSH', queue, sid)
  redis.call('SADD', queued, sid)
  redis.call('HSET', queued_at, sid, now_ms)
  -- Its "queued" entry, at position 1, comes with everyone else's in announce_positions.
  redis.call('HSET', call_prefix .. sid, 'state', 'queued')
  head_moved = true
end

-- A member whose lease is gone belongs to a dead or stalled worker: its request is not
-- lost, it goes back to the head of the queue so it keeps its turn.
local function prune()
  for _, sid in ipairs(redis.call('SMEMBERS', slots)) do
    if redis.call('EXISTS', lease_prefix .. sid) == 0 then
      redis.call('SREM', slots, sid)
      if redis.call('SISMEMBER', queued, sid) == 0 then
        push_head(sid)
      end
    end
  end
end

local promoted, dropped = {}, {}

local function promote()
  while redis.call('SCARD', slots) < max_slots do
    local sid = redis.call('LPOP', queue)
    if not sid then break end
    head_moved = true
    redis.call('SREM', queued, sid)
    local since = tonumber(redis.call('HGET', queued_at, sid) or now_ms)
    redis.call('HDEL', queued_at, sid)
    if now_ms - since > queued_ttl_ms then
      dropped[#dropped + 1] = sid
      redis.call('HSET', call_prefix .. sid, 'reason', 'expired in queue')
      set_state(sid, 'failed', nil)
    else
      local token = redis.call('INCR', fence)
      redis.call('SADD', slots, sid)
      redis.call('SET', lease_prefix .. sid, token, 'PX', lease_ms)
      set_state(sid, 'processing', nil)
      promoted[#promoted + 1] = sid
      promoted[#promoted + 1] = tostring(token)
    end
  end
end

local function announce_positions()
  if not head_moved then return end
  for i, waiting in ipairs(redis.call('LRANGE', queue, 0, POSITION_BOUND - 1)) do
    set_state(waiting, 'queued', i)
  end
end

local function position_of(sid)
  local pos = redis.call('LPOS', queue, sid)
  if pos then return pos + 1 end
  return 0
end

local verdict, released = 'ok', 0
local sid = ARGV[7]

if op == 'request' then
  if redis.call('SISMEMBER', slots, sid) == 1 and redis.call('EXISTS', lease_prefix .. sid) == 1 then
    verdict = 'active'
  elseif redis.call('SISMEMBER', queued, sid) == 1 then
    verdict = 'waiting'
  else
    prune()
    -- A fresh request for a recording that failed (attempts used up, or expired in the
    -- queue) is a person asking again: it gets a full set of attempts.
    if redis.call('HGET', call_prefix .. sid, 'state') == 'failed' then
      redis.call('HDEL', call_prefix .. sid, 'attempts', 'reason')
    end
    redis.call('RPUSH', queue, sid)
    redis.call('SADD', queued, sid)
    redis.call('HSET', queued_at, sid, now_ms)
    redis.call('HSET', call_prefix .. sid, 'state', 'queued')
    verdict = 'queued'
  end
  prune()
  promote()
  for i = 1, #promoted, 2 do
    if promoted[i] == sid then verdict = 'admitted' end
  end
  -- Its own "queued" entry only once it is known to wait (an admitted request's watchers
  -- see "processing" alone); announce_positions covers it when the head moved.
  if verdict == 'queued' then
    local position = position_of(sid)
    if position > 0 and (not head_moved or position > POSITION_BOUND) then
      set_state(sid, 'queued', position)
    end
  end
elseif op == 'release' then
  local token, outcome = ARGV[8], ARGV[9]
  local lease = redis.call('GET', lease_prefix .. sid)
  -- Fencing: only the holder of the current token frees the slot. A lapsed lease with the
  -- member still present is freed too (it is dead either way); a newer token is not ours.
  if lease == token or (not lease and redis.call('SISMEMBER', slots, sid) == 1) then
    redis.call('DEL', lease_prefix .. sid)
    redis.call('SREM', slots, sid)
    released = 1
  end
  if outcome == 'ready' then
    set_state(sid, 'ready', nil)
  elseif released == 1 then
    if outcome == 'retry' then
      set_state(sid, 'queued', nil)
    else
      set_state(sid, outcome, nil)
    end
  end
  prune()
  promote()
elseif op == 'requeue' then
  if redis.call('SISMEMBER', slots, sid) == 0 then
    if redis.call('SISMEMBER', queued, sid) == 1 then
      redis.call('LREM', queue, 0, sid)
    end
    push_head(sid)
  end
  prune()
  promote()
elseif op == 'reconcile' then
  -- Repair a queue and its dedup set that a lost write left out of step.
  local listed = {}
  for _, s in ipairs(redis.call('LRANGE', queue, 0, -1)) do listed[s] = true end
  for _, s in ipairs(redis.call('SMEMBERS', queued)) do
    if not listed[s] then
      redis.call('RPUSH', queue, s)
      if not redis.call('HGET', queued_at, s) then redis.call('HSET', queued_at, s, now_ms) end
    end
  end
  for s, _ in pairs(listed) do
    if redis.call('SISMEMBER', queued, s) == 0 then redis.call('SADD', queued, s) end
  end
  prune()
  promote()
elseif op == 'repair' then
  local repaired = 0
  for i = 7, #ARGV do
    local s = ARGV[i]
    local state = redis.call('HGET', call_prefix .. s, 'state')
    if state ~= 'queued' and state ~= 'processing' then
      redis.call('SREM', pending, s)
    else
      -- Leave transitions in progress alone (a release whose retry is being scheduled).
      local since = tonumber(redis.call('HGET', call_prefix .. s, 'state_ms') or '0') or 0
      local in_slots = redis.call('SISMEMBER', slots, s) == 1
      local in_queue = redis.call('SISMEMBER', queued, s) == 1
      if now_ms - since > lease_ms and not in_slots and not in_queue then
        push_head(s)
        repaired = repaired + 1
      end
    end
  end
  prune()
  promote()
  local out = { 'ok', redis.call('SCARD', slots), redis.call('LLEN', queue), repaired, 0,
    #promoted / 2 }
  for _, v in ipairs(promoted) do out[#out + 1] = v end
  out[#out + 1] = #dropped
  for _, v in ipairs(dropped) do out[#out + 1] = v end
  return out
else
  return redis.error_reply('unknown op ' .. tostring(op))
end

announce_positions()

local out = { verdict, redis.call('SCARD', slots), redis.call('LLEN', queue),
  sid and position_of(sid) or 0, released, #promoted / 2 }
for _, v in ipairs(promoted) do out[#out + 1] = v end
out[#out + 1] = #dropped
for _, v in ipairs(dropped) do out[#out + 1] = v end
return out
