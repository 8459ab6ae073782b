"""One download, from a granted slot to a stored ``<call_sid>.mp3`` and a released slot.

Runs as a task in the worker, outside the stream handler: the ``start`` entry is
acknowledged as soon as the task exists, and a crash from here on is repaired by the
lease lapsing (the slot script requeues the call at the head of its business's queue).

The finishing worker holds the slot's fencing token, so it releases the slot and starts
the promoted downloads itself, in the round trip that records the download's counters: a
done event through the stream would cost an XADD, a read and an acknowledgement more,
and a second worker's handling. A release lost to a crash or a Redis outage is repaired
the same way as any lost step: the lease lapses, the call is requeued, and its next
download finds the file stored.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from dataclasses import dataclass

from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from calls import stats
from calls.errors import DownloadError, LeaseLost, StorageUnavailable
from calls.events import Event
from calls.registry import Call
from consumers import handlers
from consumers.account_requests import under_permit
from consumers.backoff import backoff_s
from consumers.context import WorkerContext
from consumers.dead_letters import dead_letter
from consumers.lease import keep_lease
from semaphore.slots import Outcome, SlotResult
from tenants.ownership import claim
from tenants.routing import AccountRoute

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Ending:
    outcome: str  # ready | failed | retry | none | erased
    reason: str = ""
    delay_ms: int = 0
    size_bytes: int | None = None  # set when this attempt stored a file from Twilio


async def run_download(
    ctx: WorkerContext,
    b: str,
    sid: str,
    token: str,
    start_download: handlers.StartDownload | None = None,
) -> Ending | None:
    """How the download ended, as its slot's release recorded it; None when nothing was
    recorded (its lease was lost to a newer holder, or Redis was unreachable).
    ``start_download`` starts the downloads this one's release promotes (the worker's own
    task starter); without it, they get start events."""
    log.info("download begins business_id=%s sid=%s token=%s", b, sid, token)
    try:
        return await _run(ctx, b, sid, token, start_download)
    except (RedisError, RedisClusterException) as exc:
        # Nothing can be recorded without Redis; the lease lapses and the slot script
        # requeues the call at the head of its queue for whichever worker is alive then
        # (after a failover or a slot migration, on whichever node holds it now).
        log.warning("download abandoned business_id=%s sid=%s: redis unavailable (%s)", b, sid, exc)
        return None


async def _run(
    ctx: WorkerContext, b: str, sid: str, token: str, start_download: handlers.StartDownload | None
) -> Ending | None:
    started = time.monotonic()
    ending: Ending | None = None
    keeper = None
    try:
        async with keep_lease(ctx.slots, b, sid, token) as keeper:
            ending = await _download(ctx, b, sid, token)
    except asyncio.CancelledError:
        if keeper is not None and keeper.lost:
            # Another worker holds the slot now; it will publish and release, not us.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            ending = None
        else:
            # Shutdown: hand the request back at the head of its queue, at once. The slot
            # is released here rather than through a done event on the stream: this
            # worker reads no more events, and it may be the last one running.
            await stats.observe_download(
                ctx.redis, ctx.shards.of(b).stats, "retry", time.monotonic() - started
            )
            done = Event("done", b, sid, token=token, outcome="retry", reason="worker stopping")
            await handlers.on_done(ctx, done)
            raise
    except LeaseLost as exc:
        # Fencing: it outlived its lease (a pause, a partition); the newer holder
        # publishes and releases, this one does neither.
        log.warning("LEASE_LOST business_id=%s sid=%s token=%s: %s", b, sid, token, exc)
        ending = None
    except RedisError:
        raise
    except (StorageUnavailable, OSError) as exc:
        # Missing bucket, denied access, S3 down, a full or failing disk (every OSError
        # here comes from the store: httpx wraps its own): retried like a Twilio failure,
        # so the slot is released either way and a lasting problem ends in a dead letter.
        storage_error = DownloadError(f"storage: {_storage_detail(exc)}", retryable=True)
        log.warning("storage failed business_id=%s sid=%s: %s", b, sid, storage_error.detail)
        ending = await _failure_if_held(ctx, b, sid, token, storage_error)
    except Exception as exc:  # a bug or an unexpected dependency failure: retry it
        log.exception("download crashed business_id=%s sid=%s", b, sid)
        error = DownloadError(f"internal error: {type(exc).__name__}", retryable=True)
        ending = await _failure_if_held(ctx, b, sid, token, error)
    if ending is not None:
        await _finish(ctx, b, sid, token, ending, time.monotonic() - started, start_download)
    return ending


async def _download(ctx: WorkerContext, b: str, sid: str, token: str) -> Ending:
    async with ctx.store.lock(sid) as waited:
        # Erased while it waited (a queued request, a redelivered start): never fetched.
        if await ctx.registry.is_erased(b, sid):
            return Ending("erased", "erased")
        # Another process may have stored it while we waited for the lock.
        stored = await ctx.store.stat(sid) is not None
        if waited:
            # Counted, since only this shows the lock doing its job across processes and
            # hosts sharing a disk (the slots keep most duplicates from getting here).
            outcome = "stored" if stored else "missing"
            await stats.count(ctx.redis, ctx.shards.of(b).stats, stats.lock_wait_field(outcome))
        if stored:
            return Ending("ready")
        call = await ctx.registry.get(b, sid)
        if call is not None and call.twilio_unavailable:
            return Ending("none", "no recording at Twilio")
        route = await ctx.router.route(b, call.fields.get("account_sid") if call else None)
        recording_sid = call.fields.get("rec_sid") if call else None
        if not recording_sid:
            try:
                recording_sid = await _find_recording(ctx, route, b, sid, call)
            except DownloadError as exc:
                return await _after_failure(ctx, b, sid, token, exc)
            if recording_sid is None:
                await ctx.registry.mark_no_recording(b, sid)
                return Ending("none", "no recording at Twilio")
            await ctx.registry.set_recording_sid(b, sid, recording_sid)
        async with ctx.store.staging(sid) as staged:
            rec = recording_sid
            try:
                size_bytes = await under_permit(
                    ctx, route, b, lambda answer: ctx.twilio.fetch(route, rec, staged, answer)
                )
            except DownloadError as exc:
                return await _after_failure(ctx, b, sid, token, exc)
            # Fencing: a worker that stalled past its lease must not publish over the
            # work of the one that took the slot over.
            if not await ctx.slots.holds(b, sid, token):
                raise LeaseLost(f"lease of {sid} lost before publishing")
            # Erased while it downloaded: the staged bytes are dropped unpublished.
            if await ctx.registry.is_erased(b, sid):
                log.info("download discarded business_id=%s sid=%s: erased meanwhile", b, sid)
                return Ending("erased", "erased")
            await ctx.store.publish(staged)
        # An erasure that arrived while this download ran: it set its tombstones before
        # deleting, so either it deleted our file or we see the tombstone now.
        if await ctx.registry.is_erased(b, sid):
            await ctx.store.delete(sid)
            log.info("download discarded business_id=%s sid=%s: erased meanwhile", b, sid)
            return Ending("erased", "erased")
        if ctx.settings.lifecycle.delete_from_twilio:
            # Durable now (fsynced and renamed; with S3, uploaded): Twilio's copy may go.
            await ctx.registry.twilio_copy_deleting(b, sid, recording_sid)
    if call is None or "attempts" in call.fields or "reason" in call.fields:
        # Only a call that failed before has anything to reset (we hold its lock, so no
        # other download wrote attempts since we read the call).
        await ctx.registry.reset_attempts(b, sid)
    return Ending("ready", size_bytes=size_bytes)


async def _find_recording(
    ctx: WorkerContext, route: AccountRoute, b: str, sid: str, call: Call | None
) -> str | None:
    """List the call's recordings; a <Dial> child leg's recording is filed under its
    parent leg, so a child whose parent was never registered looks there next (only a
    parent this business owns, or nobody does yet)."""
    found = await under_permit(
        ctx, route, b, lambda answer: ctx.twilio.find_recording(route, sid, answer)
    )
    parent = call.parent_sid if call is not None else None
    if found is None and parent and await claim(ctx.redis, b, parent):
        found = await under_permit(
            ctx, route, b, lambda answer: ctx.twilio.find_recording(route, parent, answer)
        )
    return found


async def _failure_if_held(
    ctx: WorkerContext, b: str, sid: str, token: str, exc: DownloadError
) -> Ending | None:
    try:
        return await _after_failure(ctx, b, sid, token, exc)
    except LeaseLost as lost:
        log.warning("LEASE_LOST business_id=%s sid=%s token=%s: %s", b, sid, token, lost)
        return None


async def _after_failure(
    ctx: WorkerContext, b: str, sid: str, token: str, exc: DownloadError
) -> Ending:
    # Fencing: a worker that outlived its lease (a pause) must not count an attempt,
    # fail or dead-letter a request that a newer holder is downloading right now.
    if not await ctx.slots.holds(b, sid, token):
        raise LeaseLost(f"lease of {sid} lost before its failure was recorded ({exc.detail})")
    attempts = await ctx.registry.note_attempt(b, sid, exc.detail)
    max_attempts = ctx.settings.download_max_attempts
    if exc.retryable and attempts < max_attempts:
        delay_s = backoff_s(exc, attempts, base_s=ctx.backoff_base_s, cap_s=ctx.backoff_cap_s)
        log.info(
            "RECORDING_RETRY business_id=%s sid=%s attempts=%d delay_ms=%d reason=%s",
            b,
            sid,
            attempts,
            delay_s * 1000,
            _words(exc.detail),
        )
        return Ending("retry", exc.detail, int(delay_s * 1000))
    log.info(
        "RECORDING_FAILED business_id=%s sid=%s attempts=%d reason=%s",
        b,
        sid,
        attempts,
        _words(exc.detail),
    )
    await dead_letter(ctx.redis, ctx.shards, b, sid, reason=exc.detail, attempts=attempts)
    return Ending("failed", exc.detail)


def _storage_detail(exc: StorageUnavailable | OSError) -> str:
    if isinstance(exc, StorageUnavailable):
        return exc.detail
    code = errno.errorcode.get(exc.errno or 0)
    what = exc.strerror or type(exc).__name__
    return f"{what} ({code})" if code else what


def _words(text: str) -> str:
    # One key=value field: the reason's spaces would split it for log parsers.
    return text.replace(" ", "_")


async def _finish(
    ctx: WorkerContext,
    b: str,
    sid: str,
    token: str,
    ending: Ending,
    seconds: float,
    start_download: handlers.StartDownload | None,
) -> None:
    metric = {"ready": "ok", "retry": "retry", "failed": "failed"}.get(ending.outcome)
    # One round trip, in order: the counters (under the business's shard tag), then the
    # release that frees the slot and promotes the next requests (under the business's
    # tag; on a cluster the pipeline sends each its node's part).
    stats_key = ctx.shards.of(b).stats
    outcome: Outcome = ending.outcome  # type: ignore[assignment]
    async with ctx.admission_order:
        try:
            async with ctx.redis.pipeline(transaction=False) as pipe:
                if metric:
                    stats.add_download_observation(
                        pipe, stats_key, metric, seconds, ending.size_bytes
                    )
                ctx.counts.drain_into(pipe, stats_key)
                ctx.slots.release_in(pipe, b, sid, token, outcome)
                replies = await pipe.execute()
            result = SlotResult.parse(replies[-1])
        except NoScriptError:
            # The server does not know the script yet (this process's first release, or
            # a restarted or failed-over node): the counters went in; the release on its
            # own loads the script and runs it.
            result = await ctx.slots.release(b, sid, token, outcome)
        await handlers.after_release(
            ctx, b, sid, ending.outcome, ending.delay_ms, result, start_download
        )
