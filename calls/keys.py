"""Every Redis key callrec uses, in one place.

Per-business keys carry the business id as a hash tag (``{b}``) so that one business
lives in one Redis Cluster slot and its Lua scripts may touch all of them atomically.
The global keys (streams, the delayed-retry set, the business index) are not tagged.
"""

from __future__ import annotations

# --- per business, hash-tagged -------------------------------------------------------
# The contract names these four (operators run SCARD on rec_slots).
SLOTS = "rec_slots:{{{b}}}"  # SET of call SIDs holding a download slot
INFLIGHT = "rec_inflight:{{{b}}}:{sid}"  # lease of one slot member, PX = inflight ttl
INFLIGHT_PREFIX = "rec_inflight:{{{b}}}:"  # scripts derive lease keys of members from it
QUEUE = "rec_queue:{{{b}}}"  # LIST, FIFO of call SIDs waiting for a slot
QUEUED = "rec_queued:{{{b}}}"  # SET mirroring QUEUE, for O(1) dedup

QUEUED_AT = "rec_queued_at:{{{b}}}"  # HASH sid -> enqueue time (ms, Redis clock)
FENCE = "rec_fence:{{{b}}}"  # INCR counter: each admission's fencing token
CALL = "rec_call:{{{b}}}:{sid}"  # HASH: one call and its recording's state
CALL_PREFIX = "rec_call:{{{b}}}:"
CALLS_BY_TIME = "rec_calls:{{{b}}}"  # ZSET sid -> started_at (ms), for listing
STATUS_STREAM = "rec_status:{{{b}}}"  # STREAM of status changes, read by SSE
# The status stream's cap (MAXLEN ~), passed to every script that appends to it.
STATUS_STREAM_MAXLEN = 1000
PENDING = "rec_pending:{{{b}}}"  # SET of calls last set queued/processing (repair scans it)

# --- global --------------------------------------------------------------------------
EVENTS = "rec_events"  # STREAM: request/start/done events, consumer group below
EVENTS_GROUP = "workers"
DEAD_LETTERS = "rec_dead_letters"  # STREAM of requests given up on, with reason
DELAYED = "rec_delayed"  # ZSET "b|sid" -> due time (ms): retries waiting out a backoff
# HASH business id -> generation: businesses with live work (queued, slot-holding or
# pending calls), what the reconciler and /metrics walk (calls/live_businesses.py).
LIVE_BUSINESSES = "rec_live_businesses"
# The SET that indexed every business ever seen, before LIVE_BUSINESSES: adopted, then
# emptied, by the reconciler after an upgrade.
LEGACY_BUSINESSES = "rec_businesses"
STATS = "rec_stats"  # HASH of cluster-wide counters behind /metrics (calls.stats)
# STREAM (MAXLEN 1, PEXPIRE) of one web process's status hub: an append ends its blocking
# read so that the read includes a business that just got its first subscriber.
SSE_WAKE = "rec_sse_wake:{process}"
# STRING with a TTL: why handling an EVENTS entry last failed, for its dead letter.
ENTRY_ERROR = "rec_entry_error:{entry_id}"


def slots(b: str) -> str:
    return SLOTS.format(b=b)


def inflight(b: str, sid: str) -> str:
    return INFLIGHT.format(b=b, sid=sid)


def inflight_prefix(b: str) -> str:
    return INFLIGHT_PREFIX.format(b=b)


def queue(b: str) -> str:
    return QUEUE.format(b=b)


def queued(b: str) -> str:
    return QUEUED.format(b=b)


def queued_at(b: str) -> str:
    return QUEUED_AT.format(b=b)


def fence(b: str) -> str:
    return FENCE.format(b=b)


def call(b: str, sid: str) -> str:
    return CALL.format(b=b, sid=sid)


def call_prefix(b: str) -> str:
    return CALL_PREFIX.format(b=b)


def calls_by_time(b: str) -> str:
    return CALLS_BY_TIME.format(b=b)


def status_stream(b: str) -> str:
    return STATUS_STREAM.format(b=b)


def pending(b: str) -> str:
    return PENDING.format(b=b)


def entry_error(entry_id: str) -> str:
    return ENTRY_ERROR.format(entry_id=entry_id)


def delayed_member(b: str, sid: str) -> str:
    """A retry's member in ``DELAYED``."""
    return f"{b}|{sid}"


def business_keys(b: str) -> list[str]:
    """KEYS[1..7] of every slot script, in the order semaphore/lua/prelude.lua documents."""
    return [slots(b), queue(b), queued(b), queued_at(b), fence(b), status_stream(b), pending(b)]


def sse_wake(process: str) -> str:
    return SSE_WAKE.format(process=process)
