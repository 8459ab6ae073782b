--[[
Shared prelude of every script that changes a recording's state: Python
(semaphore/scripts.py) puts this file in front of each script body before registering it,
so set_state, pruning, promotion and position announcements exist once.

Nothing here reads KEYS or ARGV on its own: each body binds what it uses
(slot_context() for the five slot operations, whose KEYS[1..8] and ARGV[1..6] share one
layout; a states table for the registry's scripts). Everything runs on Redis's clock.

Common layout of the slot scripts (request, release, requeue, reconcile, repair); every
key shares the hash tag {b}, so one business is one cluster slot:
  KEYS[1] rec_slots:{b}        SET    SIDs holding a slot; a member counts only while its
                                      lease key exists
  KEYS[2] rec_queue:{b}        LIST   SIDs waiting, FIFO (RPUSH tail, LPOP head)
  KEYS[3] rec_queued:{b}       SET    mirror of KEYS[2] for O(1) dedup
  KEYS[4] rec_queued_at:{b}    HASH   sid -> enqueue time in ms
  KEYS[5] rec_fence:{b}        STRING INCR counter; each admission's fencing token
  KEYS[6] rec_status:{b}       STREAM status changes for SSE (MAXLEN ~ ARGV[6])
  KEYS[7] rec_pending:{b}      SET    calls last set to queued or processing: where repair
                                      looks for stuck ones (a superset: members in another
                                      state are dropped lazily by repair)
  KEYS[8] rec_tickets:{b}      HASH   sid -> ticket of each queued SID, plus "~next", the
                                      next tail ticket (see "Queue positions" below)
  ARGV[1] max_slots
  ARGV[2] lease key prefix     "rec_inflight:{b}:"
  ARGV[3] call key prefix      "rec_call:{b}:"
  ARGV[4] lease_ms
  ARGV[5] queued_ttl_ms        queued entries older than this are dropped as stale
  ARGV[6] status stream MAXLEN (approximate)
Derived keys: a member that is promoted, pruned or announced is read from the queue or
the slot set inside the script, so the caller cannot name its lease key
(prefix .. sid) or call hash (prefix .. sid) in advance. Both carry the same hash tag,
so they live in the same cluster slot. The operation's own SID's keys are in KEYS.

Cluster safety of derived keys: while a business's slot migrates, a key already moved to
the new node is "not local" here, and the first command that touches it fails the script
with an error; Redis does not roll back what the script wrote before. So slot_context()
reads (EXISTS) every derived key the operation may touch before the script's first
write: the lease and call keys of the slot members (prune may requeue them, and
announce_positions then names them), and of the first PROMOTE_BUDGET queued SIDs
(promote takes at most that many). announce_positions names no other derived key: the
SIDs it announces are ones this call put back at the head (slot members, or SIDs in
KEYS); everyone else's place comes from the one queue_head entry. During a migration
that check fails before anything is written (a key that does not exist locally counts
as moved), the caller gets a transient error and retries; the script never leaves half
its writes behind. promote stops after PROMOTE_BUDGET pops (max_slots +
PROMOTE_DROP_BUDGET expired ones), so it never reaches a SID the check did not cover;
the next call or reconcile tick drops the rest.

Status events (KEYS[6], read by /api/events): every state change of a SID is one entry
(sid, status, position, and for a queued SID its ticket).

Queue positions, O(1) per move: each queued SID holds a ticket (KEYS[8]); tickets run
consecutively from the head (a SID queued at the tail takes the next number, one put back
at the head the head's number minus one), so a SID's place is its ticket minus the head's,
plus one. When the head moves (promotion, a drop, a SID put back at the head) the script
appends one entry, (queue_head = the head's ticket), and each page computes its own
place; nobody else's state is rewritten. The one removal from the middle (requeue of a SID
that was also queued, a repair) leaves the places behind it one too high until the page
asks /recording/status again, which reads the exact place (LPOS).
]]

-- Expired queue entries promote may drop per call, beyond max_slots admissions.
local PROMOTE_DROP_BUDGET = 10

local clock = nil
local function now_ms()
  if not clock then
    local t = redis.call('TIME')
    clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return clock
end

-- The one place a recording's state changes. st = { status = stream key, pending = set
-- key, maxlen = stream cap }. Writes state (and state_ms, which repair reads), keeps the
-- pending index, and appends a status event when a watcher would see something new: a
-- different state, or a queue position. Setting a state it already has is silent, so two
-- callers marking the same recording ready emit "ready" once. An erased recording
-- stays erased.
local function set_state(st, call_key, sid, state, position, reason, ticket)
  local previous = redis.call('HGET', call_key, 'state')
  -- Erased is final (guarantee 11): a promotion, a late release or a file found by a
  -- racing download never brings the recording back.
  if previous == 'erased' then return end
  redis.call('HSET', call_key, 'state', state, 'state_ms', now_ms())
  if reason then redis.call('HSET', call_key, 'reason', reason) end
  if state == 'queued' or state == 'processing' then
    redis.call('SADD', st.pending, sid)
  else
    redis.call('SREM', st.pending, sid)
  end
  if previous ~= state or position then
    redis.call('XADD', st.status, 'MAXLEN', '~', st.maxlen, '*',
      'sid', sid, 'status', state, 'position', tostring(position or ''),
      'ticket', tostring(ticket or ''))
  end
end

-- Reads every derived key listed (see "Cluster safety" above); call before any write.
local function check_local(keys)
  if #keys > 0 then redis.call('EXISTS', unpack(keys)) end
end

-- The derived keys any slot operation may touch (see "Cluster safety" above).
local function check_derived(c)
  local derived = {}
  for _, sid in ipairs(redis.call('SMEMBERS', c.slots)) do
    derived[#derived + 1] = c.lease_prefix .. sid
    derived[#derived + 1] = c.call_prefix .. sid
  end
  local window = redis.call('LRANGE', c.queue, 0, c.promote_budget - 1)
  for _, sid in ipairs(window) do
    derived[#derived + 1] = c.call_prefix .. sid
    derived[#derived + 1] = c.lease_prefix .. sid
  end
  check_local(derived)
end

-- Binds the common KEYS/ARGV layout above and checks the derived keys are local (before
-- the caller's first write); the table also collects what the operation did (promoted,
-- dropped, requeued) for the result and the position announcements.
local function slot_context()
  local max_slots = tonumber(ARGV[1])
  local c = {
    slots = KEYS[1], queue = KEYS[2], queued = KEYS[3], queued_at = KEYS[4],
    fence = KEYS[5], tickets = KEYS[8],
    st = { status = KEYS[6], pending = KEYS[7], maxlen = ARGV[6] },
    max_slots = max_slots,
    promote_budget = max_slots + PROMOTE_DROP_BUDGET,
    lease_prefix = ARGV[2], call_prefix = ARGV[3],
    lease_ms = tonumber(ARGV[4]), queued_ttl_ms = tonumber(ARGV[5]),
    head_moved = false, promoted = {}, dropped = {}, requeued = {},
  }
  check_derived(c)
  return c
end

local function call_key(c, sid)
  return c.call_prefix .. sid
end

local function ticket_of(c, sid)
  return tonumber(redis.call('HGET', c.tickets, sid))
end

-- At the tail: the next ticket.
local function push_tail(c, sid)
  redis.call('RPUSH', c.queue, sid)
  redis.call('SADD', c.queued, sid)
  redis.call('HSET', c.tickets, sid, redis.call('HINCRBY', c.tickets, '~next', 1))
end

-- Back at the head of the queue (a dead member, a due retry, a stuck call): the head's
-- ticket minus one (the next tail ticket when the queue is empty). Its state event, with
-- its position, comes from announce_positions.
local function push_head(c, sid)
  local head = redis.call('LINDEX', c.queue, 0)
  local below = head and ticket_of(c, head)
  local ticket = below and below - 1 or redis.call('HINCRBY', c.tickets, '~next', 1)
  redis.call('LPUSH', c.queue, sid)
  redis.call('SADD', c.queued, sid)
  redis.call('HSET', c.queued_at, sid, now_ms())
  redis.call('HSET', c.tickets, sid, ticket)
  c.requeued[#c.requeued + 1] = sid
  c.head_moved = true
end

-- A member whose lease is gone belongs to a dead or stalled worker: its request is not
-- lost, it goes back to the head of the queue so it keeps its turn.
local function prune(c)
  for _, sid in ipairs(redis.call('SMEMBERS', c.slots)) do
    if redis.call('EXISTS', c.lease_prefix .. sid) == 0 then
      redis.call('SREM', c.slots, sid)
      if redis.call('SISMEMBER', c.queued, sid) == 0 then
        push_head(c, sid)
      end
    end
  end
end

local function promote(c)
  local pops = 0
  while pops < c.promote_budget and redis.call('SCARD', c.slots) < c.max_slots do
    local sid = redis.call('LPOP', c.queue)
    if not sid then break end
    pops = pops + 1
    c.head_moved = true
    redis.call('SREM', c.queued, sid)
    redis.call('HDEL', c.tickets, sid)
    local since = tonumber(redis.call('HGET', c.queued_at, sid) or now_ms())
    redis.call('HDEL', c.queued_at, sid)
    if now_ms() - since > c.queued_ttl_ms then
      c.dropped[#c.dropped + 1] = sid
      set_state(c.st, call_key(c, sid), sid, 'failed', nil, 'expired in queue')
    else
      local token = redis.call('INCR', c.fence)
      redis.call('SADD', c.slots, sid)
      redis.call('SET', c.lease_prefix .. sid, token, 'PX', c.lease_ms)
      set_state(c.st, call_key(c, sid), sid, 'processing', nil, nil)
      c.promoted[#c.promoted + 1] = { sid = sid, token = tostring(token) }
    end
  end
end

local function position_of(c, sid)
  local pos = redis.call('LPOS', c.queue, sid)
  if pos then return pos + 1 end
  return 0
end

-- Every operation ends here: free slots filled, then waiting SIDs told where they are.
local function prune_and_promote(c)
  prune(c)
  promote(c)
end

-- When the head moved: one entry with the head's ticket, from which every waiting page
-- computes its place; and the "queued" state, with place and ticket, of each SID this
-- call put back at the head (it was processing, or had lost its place).
local function announce_positions(c)
  if not c.head_moved then return end
  for _, sid in ipairs(c.requeued) do
    if redis.call('SISMEMBER', c.queued, sid) == 1 then
      set_state(c.st, call_key(c, sid), sid, 'queued', position_of(c, sid), nil,
        ticket_of(c, sid))
    end
  end
  local head = redis.call('LINDEX', c.queue, 0)
  local ticket = head and ticket_of(c, head)
  if ticket then
    redis.call('XADD', c.st.status, 'MAXLEN', '~', c.st.maxlen, '*', 'queue_head', ticket)
  end
end

-- Named fields, JSON-encoded (cjson encodes an empty table as {}: Python reads both).
local function slot_result(c, verdict, position, released)
  local active = redis.call('SCARD', c.slots)
  local queue_len = redis.call('LLEN', c.queue)
  local idle = active == 0 and queue_len == 0
    and redis.call('SCARD', c.queued) == 0 and redis.call('SCARD', c.st.pending) == 0
  return cjson.encode({
    verdict = verdict,
    active = active,
    queue_len = queue_len,
    position = position,
    released = released,
    promoted = c.promoted,
    dropped = c.dropped,
    idle = idle,
  })
end

