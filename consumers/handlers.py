"""What a worker does with each kind of stream entry. Each handler is short: it writes
the Redis state the entry stands for and returns; downloads run as separate tasks."""

from __future__ import annotations

import logging
from collections.abc import Callable

from calls import keys, live_businesses
from calls.errors import StorageUnavailable
from calls.events import Event, publish
from consumers.context import WorkerContext
from semaphore.slots import SlotResult

log = logging.getLogger(__name__)

StartDownload = Callable[[str, str, str], None]


async def announce(
    ctx: WorkerContext,
    b: str,
    result: SlotResult,
    *,
    skip: str = "",
    start_download: StartDownload | None = None,
) -> None:
    """RECORDING_NEXT lines for everything a slot script promoted, and their downloads.

    With ``start_download`` the downloads start in this process at once: the admission is
    fresh (no stale-start check needed) and the round trip through the stream, a third
    of a short download's Redis commands and most of its start latency, is saved. A crash
    before the download starts loses nothing: the lease lapses and the member is requeued
    at the head, as for a lost start event. Without it (maintenance loops), start events."""
    max_slots = ctx.slots.max_slots
    for admission in result.promoted:
        if admission.sid != skip:
            log.info(
                "RECORDING_NEXT business_id=%s sid=%s active=%d/%d",
                b,
                admission.sid,
                result.active,
                max_slots,
            )
    for sid in result.dropped:
        log.info("RECORDING_EXPIRED business_id=%s sid=%s reason=queued_too_long", b, sid)
    if result.promoted and start_download is not None:
        for admission in result.promoted:
            start_download(b, admission.sid, admission.token)
    elif result.promoted:
        await publish(
            ctx.redis,
            ctx.shards,
            *(Event("start", b, a.sid, token=a.token) for a in result.promoted),
        )


async def on_request(
    ctx: WorkerContext, event: Event, start_download: StartDownload | None = None
) -> None:
    b, sid = event.business_id, event.sid
    call = await ctx.registry.get(b, sid)
    if call is not None and call.state == "erased":
        # Erased: never fetched again, whoever asks (guarantee 11).
        log.info("request ignored business_id=%s sid=%s: erased", b, sid)
        return
    # Stored already: Twilio is never asked again (guarantee 2).
    try:
        stored = await ctx.store.stat(sid) is not None
    except StorageUnavailable as exc:
        # Unknown, not absent: the download looks again under its lock, and turns a
        # lasting storage failure into retries and a dead letter instead of a stuck entry.
        log.warning("storage check failed business_id=%s sid=%s: %s", b, sid, exc.detail)
        stored = False
    if stored:
        await ctx.registry.mark_ready(b, sid)
        return
    if call is not None and call.twilio_unavailable:
        # A request that raced Twilio's absent/failed callback (or a requeued dead
        # letter): there is nothing to fetch, so it takes no slot and asks nothing.
        log.info("request ignored business_id=%s sid=%s twilio=%s", b, sid, call.twilio_recording)
        return
    async with ctx.admission_order:
        result = await ctx.slots.request(b, sid)
        max_slots = ctx.slots.max_slots
        if result.verdict == "admitted":
            log.info(
                "RECORDING_ENQUEUE business_id=%s sid=%s active=%d/%d",
                b,
                sid,
                result.active,
                max_slots,
            )
        elif result.verdict == "queued":
            log.info(
                "RECORDING_QUEUED business_id=%s sid=%s active=%d/%d queue_len=%d",
                b,
                sid,
                result.active,
                max_slots,
                result.queue_len,
            )
        else:
            log.debug("request coalesced business_id=%s sid=%s verdict=%s", b, sid, result.verdict)
        await announce(ctx, b, result, skip=sid, start_download=start_download)
    # After the script (live_businesses.py says why), and on every verdict: a redelivered
    # request may be the one whose first handler died before noting the business.
    await live_businesses.note(ctx.redis, ctx.shards, b)


async def on_start(ctx: WorkerContext, event: Event, start_download: StartDownload) -> None:
    b, sid, token = event.business_id, event.sid, event.token
    # A start entry redelivered after its download began, or outlived by its lease,
    # must not begin a second download.
    if not await ctx.slots.holds(b, sid, token):
        log.debug("stale start business_id=%s sid=%s token=%s", b, sid, token)
        return
    start_download(b, sid, token)


async def on_done(
    ctx: WorkerContext, event: Event, start_download: StartDownload | None = None
) -> None:
    """A done entry on the stream. Downloads finish by releasing their slot themselves
    (``download_job``); this handles entries a worker of an earlier version published."""
    b, sid = event.business_id, event.sid
    outcome = event.outcome or "failed"
    async with ctx.admission_order:
        result = await ctx.slots.release(b, sid, event.token, outcome)  # type: ignore[arg-type]
        await after_release(ctx, b, sid, outcome, event.delay_ms, result, start_download)


async def after_release(
    ctx: WorkerContext,
    b: str,
    sid: str,
    outcome: str,
    delay_ms: int,
    result: SlotResult,
    start_download: StartDownload | None = None,
) -> None:
    """What follows a release script: RECORDING_DONE, a retry's backoff, and the
    promoted requests (their downloads start here when ``start_download`` is given)."""
    if result.released:
        # The script already promoted the next ones; DONE reports the count between the
        # release and those promotions, NEXT the count after each.
        log.info(
            "RECORDING_DONE business_id=%s sid=%s active=%d/%d",
            b,
            sid,
            result.active - len(result.promoted),
            ctx.slots.max_slots,
        )
        if outcome == "retry":
            await schedule_retry(ctx, b, sid, delay_ms)
    await announce(ctx, b, result, start_download=start_download)


async def schedule_retry(ctx: WorkerContext, b: str, sid: str, delay_ms: int) -> None:
    now_s, now_us = await ctx.redis.time()
    due_ms = now_s * 1000 + now_us // 1000 + delay_ms
    await ctx.redis.zadd(ctx.shards.of(b).delayed, {keys.delayed_member(b, sid): due_ms})
