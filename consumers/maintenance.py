"""Background loops of a worker that keep the system moving when events are lost:

- retries whose backoff ran out go back to the head of their business's queue;
- stream entries of dead consumers are claimed (XAUTOCLAIM) and handled again, and
  entries delivered too often are dead-lettered;
- every business with live work (``calls/live_businesses.py``) gets its slots reconciled
  (dead members requeued, queue and dedup set repaired, free slots filled), and calls
  stuck in queued/processing with nothing left to move them on (a done event handled but
  its retry never scheduled, a write lost with Redis's last second of AOF) go back to
  the head of their queue; a business left with nothing is dropped from the index, so
  the cost of a tick follows the businesses with work;
- the event stream is trimmed below the oldest entry still pending.

Each runs per event-stream shard (``calls/shards.py``), over every registered shard.
Every loop is safe to run in every worker at once: the scripts are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.exceptions import RedisError

from calls import keys, live_businesses
from calls.redis_values import texts
from calls.shards import Shard
from consumers.context import WorkerContext
from consumers.dead_letters import dead_letter
from consumers.entries import InvalidEntry, forget_failure, last_failure, parse_entry
from consumers.handlers import announce

log = logging.getLogger(__name__)

# Handles one entry; acknowledges it when it is finished with, leaves it pending if not.
HandleEntry = Callable[[str, Mapping[Any, Any]], Awaitable[object]]

MAX_DELIVERIES = 5
# Calls checked for being stuck, per business and tick: bounds the Redis work of a tick
# however many calls wait; a stuck one among more is found on a later tick.
REPAIR_BATCH = 100


async def promote_due_retries(ctx: WorkerContext, *, shard: Shard | None = None) -> int:
    """Requeue the retries of ``shard`` (default: the first current one) now due."""
    shard = shard or ctx.shards.current[0]
    now_s, now_us = await ctx.redis.time()
    now_ms = now_s * 1000 + now_us // 1000
    due = await ctx.redis.zrangebyscore(shard.delayed, "-inf", now_ms, start=0, num=100)
    for member in texts(due):
        b, _, sid = member.partition("|")
        result = await ctx.slots.requeue(b, sid)
        await announce(ctx, b, result)
        # Before the retry leaves the delayed set: a crash in between requeues it again.
        await live_businesses.note(ctx.redis, ctx.shards, b)
        await ctx.redis.zrem(shard.delayed, member)
    return len(due)


async def reconcile_all(
    ctx: WorkerContext,
    *,
    shard: Shard | None = None,
    registered: tuple[Shard, ...] | None = None,
) -> int:
    """Reconcile every business with live work in ``shard``'s index; returns how many
    were dropped from it for having none left. ``registered``: every shard whose
    delayed set may hold a retry (default: the current ones)."""
    shard = shard or ctx.shards.current[0]
    if shard == ctx.shards.current[0]:
        await live_businesses.adopt_legacy(ctx.redis, ctx.shards)
    forgotten = 0
    # Generations read before each business's script: forget_if_unchanged keeps a
    # business that a concurrent request gave work after its script found it idle.
    for b, generation in (await live_businesses.generations(ctx.redis, shard.live)).items():
        result = await ctx.slots.reconcile(b)
        await announce(ctx, b, result)
        await repair_stuck(ctx, b, registered or ctx.shards.current)
        if result.idle and await live_businesses.forget_if_unchanged(
            ctx.redis, shard.live, b, generation
        ):
            forgotten += 1
    return forgotten


async def repair_stuck(
    ctx: WorkerContext, b: str, registered: tuple[Shard, ...] | None = None
) -> int:
    sids = texts(await ctx.redis.srandmember(keys.pending(b), REPAIR_BATCH) or [])
    if not sids:
        return 0
    members = [keys.delayed_member(b, s) for s in sids]
    # A call waiting out a retry backoff is not stuck: promote_due_retries moves it on.
    # Its retry is in its shard's delayed set, or (N changed since) an older shard's.
    waiting: set[str] = set()
    for shard in registered or ctx.shards.current:
        delays = await ctx.redis.zmscore(shard.delayed, members)
        waiting |= {sid for sid, due in zip(sids, delays, strict=True) if due is not None}
    candidates = [sid for sid in sids if sid not in waiting]
    if not candidates:
        return 0
    result = await ctx.slots.repair(b, candidates)
    if result.position:
        log.warning("RECORDING_REPAIRED business_id=%s stuck=%d requeued", b, result.position)
    await announce(ctx, b, result)
    return result.position


async def claim_stale(
    ctx: WorkerContext, handle: HandleEntry, min_idle_ms: int, *, shard: Shard | None = None
) -> int:
    """Take over entries of ``shard`` (default: the first current one) other consumers
    read but never acknowledged."""
    shard = shard or ctx.shards.current[0]
    claimed = 0
    cursor = "0-0"
    while True:
        reply = await ctx.redis.xautoclaim(
            shard.events, keys.EVENTS_GROUP, ctx.consumer, min_idle_ms, cursor, count=50
        )
        cursor, entries = reply[0], reply[1]
        for entry_id, fields in entries:
            if fields is None:  # deleted while pending
                await ctx.redis.xack(shard.events, keys.EVENTS_GROUP, entry_id)
                continue
            info = await ctx.redis.xpending_range(
                shard.events, keys.EVENTS_GROUP, min=entry_id, max=entry_id, count=1
            )
            deliveries = int(info[0]["times_delivered"]) if info else 1
            eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            if deliveries > MAX_DELIVERIES:
                await _dead_letter_entry(ctx, shard, eid, fields, deliveries)
                continue
            claimed += 1
            await handle(eid, fields)
        if cursor in (b"0-0", "0-0"):
            return claimed


async def _dead_letter_entry(
    ctx: WorkerContext, shard: Shard, entry_id: str, fields: Mapping[Any, Any], deliveries: int
) -> None:
    try:
        event = parse_entry(fields)
        b, sid = event.business_id, event.sid
    except InvalidEntry:
        b, sid = "", ""
    reason = f"delivered {deliveries} times"
    last_error = await last_failure(ctx.redis, shard.events, entry_id)
    if last_error:
        reason += f"; last error: {last_error}"
    log.warning("stream entry %s dead-lettered: %s", entry_id, reason)
    await dead_letter(
        ctx.redis, ctx.shards, b, sid, reason=reason, attempts=deliveries, kind="stream"
    )
    await ctx.redis.xack(shard.events, keys.EVENTS_GROUP, entry_id)
    await forget_failure(ctx.redis, shard.events, entry_id)


async def trim_events(ctx: WorkerContext, *, shard: Shard | None = None) -> None:
    shard = shard or ctx.shards.current[0]
    summary = await ctx.redis.xpending(shard.events, keys.EVENTS_GROUP)
    groups = await ctx.redis.xinfo_groups(shard.events)
    delivered = next(
        (g["last-delivered-id"] for g in groups if g["name"] in (b"workers", "workers")), None
    )
    floor = summary["min"] if summary and summary.get("pending") else delivered
    if floor:
        # Entries before the oldest pending one are acknowledged everywhere: safe to drop.
        await ctx.redis.xtrim(shard.events, minid=floor, approximate=True)


async def run_every(
    interval_s: float, name: str, step: Callable[[], Awaitable[object]], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            await step()
        except RedisError as exc:
            log.warning("%s: redis unavailable (%s); retrying", name, exc)
        except Exception:
            log.exception("%s failed; retrying", name)
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass
