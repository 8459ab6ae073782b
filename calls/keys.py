"""Every Redis key callrec uses, in one place.

Per-business keys carry the business id as a hash tag (``{b}``) so that one business
lives in one Redis Cluster slot and its Lua scripts may touch all of them atomically.
The work streams and their companions (the delayed-retry set, the business index, the
counters) are per event-stream shard (``calls/shards.py``); the few global keys are
touched only at start, by operators or on failures.
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
# A recording's own record is CALL with its recording SID: the hash the slot scripts keep
# a member's state in (the call's, for its primary; the recording's own otherwise).
CALL_RECS = "rec_call_recs:{{{b}}}:{sid}"  # ZSET recording SID -> start ms: a call's own
CONF = "rec_conf:{{{b}}}:{cf}"  # HASH: a conference some callback registered
CONF_RECS = "rec_conf_recs:{{{b}}}:{cf}"  # ZSET recording SID -> start ms
CONF_CALLS = "rec_conf_calls:{{{b}}}:{cf}"  # SET of calls that joined the conference
CALL_CONFS = "rec_call_confs:{{{b}}}:{sid}"  # SET of conferences the call joined
STATUS_STREAM = "rec_status:{{{b}}}"  # STREAM of status changes, read by SSE
# The status stream's cap (MAXLEN ~), passed to every script that appends to it.
STATUS_STREAM_MAXLEN = 1000
PENDING = "rec_pending:{{{b}}}"  # SET of calls last set queued/processing (repair scans it)
# HASH sid -> ticket of each queued SID, consecutive from the head, plus TICKET_NEXT: a
# page computes its place from its ticket and the head's (semaphore/lua/prelude.lua).
TICKETS = "rec_tickets:{{{b}}}"
TICKET_NEXT = "~next"  # the field holding the next tail ticket (never a SID)
BACKFILL = "rec_backfill:{{{b}}}"  # HASH: a backfill's cursor and counters (lifecycle.backfill)
ERASED = "rec_erased:{{{b}}}"  # SET of tombstones: erased slot members and recording SIDs
RETENTION = "rec_retention:{{{b}}}"  # STRING: the last call retention erased (its cursor)
BACKFILL_JOB = "rec_backfill_job:{{{b}}}"  # HASH: a backfill asked over the admin API
BACKLOG = "rec_backlog:{{{b}}}"  # LIST of slot members a backfill wants downloaded, oldest first

ACCOUNT = "tw_account:{{{b}}}"  # HASH: the business's own Twilio account (secrets encrypted)

# A business has live work while any of these exists (Redis deletes an emptied list or
# set): a request queued, a slot member (live or dead), a call queued/processing. The
# sweep (consumers/live_sweep.py) finds them with one SCAN pattern that covers the three
# (and a few other rec_ keys, filtered out by business_with_work).
LIVE_WORK = (QUEUE, SLOTS, PENDING)
LIVE_WORK_MATCH = "rec_[pqs][uel]*"

# --- per Twilio account, hash-tagged by the account SID: its request permits ------------
PERMITS = "tw_permits:{{tw:{a}}}"  # SET of permit ids in flight; valid while their lease lives
PERMIT_PREFIX = "tw_permit:{{tw:{a}}}:"  # + permit id: lease (value = business), PX
RING = "tw_ring:{{tw:{a}}}"  # LIST of businesses with waiters, served round robin
WAIT_PREFIX = "tw_wait:{{tw:{a}}}:"  # + business: LIST of that business's waiters, FIFO
PROC_PREFIX = "tw_proc:{{tw:{a}}}:"  # + process id: its waiters are alive while this lives
PROC_LAPSED = ":lapsed"  # proc key + this: STRING, its waiters may have been dropped
PROC_INBOX = ":granted"  # proc key + this: LIST of its waiters granted since its last poll
RATE = "tw_rate:{{tw:{a}}}"  # HASH: AIMD state (limit, ok, cut_ms) and 429 count

# --- per event-stream shard (calls/shards.py) ----------------------------------------
# One shard (EVENT_STREAM_SHARDS=1) keeps these untagged names; with N shards each name
# gets the shard's tag ("rec_events:{ev12}"), so a shard's four keys share one slot.
EVENTS = "rec_events"  # STREAM: request/start/done events, consumer group below
EVENTS_GROUP = "workers"
DELAYED = "rec_delayed"  # ZSET "b|sid" -> due time (ms): retries waiting out a backoff
# HASH business id -> generation: businesses with live work (queued, slot-holding or
# pending calls), what the reconciler and /metrics walk (calls/live_businesses.py).
LIVE_BUSINESSES = "rec_live_businesses"
STATS = "rec_stats"  # HASH of cluster-wide counters behind /metrics (calls.stats)
EVENTS_SHARD = "rec_events:{{{tag}}}"
DELAYED_SHARD = "rec_delayed:{{{tag}}}"
LIVE_BUSINESSES_SHARD = "rec_live_businesses:{{{tag}}}"
STATS_SHARD = "rec_stats:{{{tag}}}"

# --- global --------------------------------------------------------------------------
# SET of every event stream in use (current shards and older ones not yet drained):
# touched at start and by the workers' upkeep, never per download.
EVENT_STREAMS = "rec_event_streams"
DEAD_LETTERS = "rec_dead_letters"  # STREAM of requests given up on, with reason
# The SET that indexed every business ever seen, before LIVE_BUSINESSES: adopted, then
# emptied, by the reconciler after an upgrade.
LEGACY_BUSINESSES = "rec_businesses"
ACCOUNTS = "tw_accounts"  # SET of businesses with their own Twilio account
ACCOUNTS_VERSION = "tw_accounts_version"  # INCR on every registration change (worker caches)
KNOWN_ACCOUNTS = "tw_known_accounts"  # SET of account SIDs requests went to (metrics, status)
# Which business a call or recording SID belongs to: the first one that registered it.
# One key per SID, untagged: each claim is a single-key SET NX.
OWNER = "rec_owner:{sid}"
# STREAM (MAXLEN 1, PEXPIRE) of one web process's status hub: an append ends its blocking
# read so that the read includes a business that just got its first subscriber.
SSE_WAKE = "rec_sse_wake:{process}"
BACKFILL_JOBS = "rec_backfill_jobs"  # ZSET business -> due ms: admin backfills for workers
KNOWN_BUSINESSES = "rec_known_businesses"  # SET of businesses with calls (retention visits)
BACKLOG_BUSINESSES = "rec_backlog_businesses"  # SET of businesses with a non-empty backlog
TWILIO_DELETES = "rec_twilio_deletes"  # ZSET "b|RE..." -> due ms: Twilio copies to delete
TWILIO_DELETE_ATTEMPTS = "rec_twilio_delete_attempts"  # HASH "b|RE..." -> failed attempts
# STRING with a TTL: why handling a work-stream entry last failed, for its dead letter.
# Entry ids repeat across shards: a tagged shard's name is part of the key (and its tag,
# so the key lives beside the stream).
ENTRY_ERROR = "rec_entry_error:{entry_id}"
ENTRY_ERROR_SHARD = "rec_entry_error:{stream}:{entry_id}"


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


def call_recs(b: str, sid: str) -> str:
    return CALL_RECS.format(b=b, sid=sid)


def conf(b: str, cf: str) -> str:
    return CONF.format(b=b, cf=cf)


def conf_recs(b: str, cf: str) -> str:
    return CONF_RECS.format(b=b, cf=cf)


def conf_calls(b: str, cf: str) -> str:
    return CONF_CALLS.format(b=b, cf=cf)


def call_confs(b: str, sid: str) -> str:
    return CALL_CONFS.format(b=b, sid=sid)


def calls_by_time(b: str) -> str:
    return CALLS_BY_TIME.format(b=b)


def status_stream(b: str) -> str:
    return STATUS_STREAM.format(b=b)


def pending(b: str) -> str:
    return PENDING.format(b=b)


def tickets(b: str) -> str:
    return TICKETS.format(b=b)


def erased(b: str) -> str:
    return ERASED.format(b=b)


def retention(b: str) -> str:
    return RETENTION.format(b=b)


def backfill(b: str) -> str:
    return BACKFILL.format(b=b)


def backfill_job(b: str) -> str:
    return BACKFILL_JOB.format(b=b)


def backlog(b: str) -> str:
    return BACKLOG.format(b=b)


def entry_error(stream: str, entry_id: str) -> str:
    if stream == EVENTS:
        return ENTRY_ERROR.format(entry_id=entry_id)
    return ENTRY_ERROR_SHARD.format(stream=stream, entry_id=entry_id)


def delayed_member(b: str, sid: str) -> str:
    """A retry's member in ``DELAYED``."""
    return f"{b}|{sid}"


def business_keys(b: str) -> list[str]:
    """KEYS[1..8] of every slot script, in the order semaphore/lua/prelude.lua documents."""
    return [
        slots(b),
        queue(b),
        queued(b),
        queued_at(b),
        fence(b),
        status_stream(b),
        pending(b),
        tickets(b),
    ]


def account(b: str) -> str:
    return ACCOUNT.format(b=b)


def owner(sid: str) -> str:
    return OWNER.format(sid=sid)


def permit_keys(a: str) -> list[str]:
    """KEYS of every permit script, in the order their headers document."""
    return [PERMITS.format(a=a), RING.format(a=a), RATE.format(a=a)]


def permit_prefixes(a: str) -> list[str]:
    """Prefixes of the permit scripts' derived keys (same hash tag as ``permit_keys``)."""
    return [PERMIT_PREFIX.format(a=a), WAIT_PREFIX.format(a=a), PROC_PREFIX.format(a=a)]


def business_with_work(key: str) -> str | None:
    """The business whose live work ``key`` is (one of ``LIVE_WORK``), else None."""
    for template in LIVE_WORK:
        prefix, suffix = template.format(b="\0").split("\0")
        if key.startswith(prefix) and key.endswith(suffix) and len(key) > len(prefix + suffix):
            return key[len(prefix) : len(key) - len(suffix)]
    return None


def permit_lease(a: str, permit_id: str) -> str:
    return PERMIT_PREFIX.format(a=a) + permit_id


def permit_wait(a: str, b: str) -> str:
    return WAIT_PREFIX.format(a=a) + b


def permit_proc_keys(a: str, proc: str) -> list[str]:
    """A process's keys on account ``a``: liveness, lapsed marker, grants inbox (the
    permit scripts derive the same names for other processes: PROC_LAPSED, PROC_INBOX)."""
    alive = PROC_PREFIX.format(a=a) + proc
    return [alive, alive + PROC_LAPSED, alive + PROC_INBOX]


def sse_wake(process: str) -> str:
    return SSE_WAKE.format(process=process)
