"""One download, from a granted slot to a stored ``<call_sid>.mp3`` and a done event.

Runs as a task in the worker, outside the stream handler: the ``start`` entry is
acknowledged as soon as the task exists, and a crash from here on is repaired by the
lease lapsing (the slot script requeues the call at the head of its business's queue).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from calls import stats
from calls.errors import DownloadError, LeaseLost, StorageUnavailable
from calls.events import Event, add_events
from consumers import handlers
from consumers.backoff import backoff_s
from consumers.context import WorkerContext
from consumers.dead_letters import dead_letter
from consumers.lease import keep_lease

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Ending:
    outcome: str  # ready | failed | retry | none
    reason: str = ""
    delay_ms: int = 0
    size_bytes: int | None = None  # set when this attempt stored a file from Twilio


async def run_download(ctx: WorkerContext, b: str, sid: str, token: str) -> None:
    log.info("download begins business_id=%s sid=%s token=%s", b, sid, token)
    try:
        await _run(ctx, b, sid, token)
    except RedisError as exc:
        # Nothing can be recorded without Redis; the lease lapses and the slot script
        # requeues the call at the head of its queue for whichever worker is alive then.
        log.warning("download abandoned business_id=%s sid=%s: redis unavailable (%s)", b, sid, exc)


async def _run(ctx: WorkerContext, b: str, sid: str, token: str) -> None:
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
            await stats.observe_download(ctx.redis, "retry", time.monotonic() - started)
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
        await _finish(ctx, b, sid, token, ending, time.monotonic() - started)


async def _download(ctx: WorkerContext, b: str, sid: str, token: str) -> Ending:
    async with ctx.store.lock(sid) as waited:
        # Another process may have stored it while we waited for the lock.
        stored = await ctx.store.stat(sid) is not None
        if waited:
            # Counted, since only this shows the lock doing its job across processes and
            # hosts sharing a disk (the slots keep most duplicates from getting here).
            outcome = "stored" if stored else "missing"
            await stats.count(ctx.redis, stats.lock_wait_field(outcome))
        if stored:
            return Ending("ready")
        call = await ctx.registry.get(b, sid)
        if call is not None and call.twilio_unavailable:
            return Ending("none", "no recording at Twilio")
        recording_sid = call.fields.get("rec_sid") if call else None
        if not recording_sid:
            try:
                recording_sid = await ctx.twilio.find_recording(sid)
            except DownloadError as exc:
                return await _after_failure(ctx, b, sid, token, exc)
            if recording_sid is None:
                await ctx.registry.mark_no_recording(b, sid)
                return Ending("none", "no recording at Twilio")
            await ctx.registry.set_recording_sid(b, sid, recording_sid)
        async with ctx.store.staging(sid) as staged:
            try:
                size_bytes = await ctx.twilio.fetch(recording_sid, staged)
            except DownloadError as exc:
                return await _after_failure(ctx, b, sid, token, exc)
            # Fencing: a worker that stalled past its lease must not publish over the
            # work of the one that took the slot over.
            if not await ctx.slots.holds(b, sid, token):
                raise LeaseLost(f"lease of {sid} lost before publishing")
            await ctx.store.publish(staged)
    if call is None or "attempts" in call.fields or "reason" in call.fields:
        # Only a call that failed before has anything to reset (we hold its lock, so no
        # other download wrote attempts since we read the call).
        await ctx.registry.reset_attempts(b, sid)
    return Ending("ready", size_bytes=size_bytes)


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
    await dead_letter(ctx.redis, b, sid, reason=exc.detail, attempts=attempts)
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
    ctx: WorkerContext, b: str, sid: str, token: str, ending: Ending, seconds: float
) -> None:
    metric = {"ready": "ok", "retry": "retry", "failed": "failed"}.get(ending.outcome)
    done = Event(
        "done",
        b,
        sid,
        token=token,
        outcome=ending.outcome,
        reason=ending.reason,
        delay_ms=ending.delay_ms,
    )
    # One round trip, in order: the counters, then the event that frees the slot.
    async with ctx.redis.pipeline(transaction=False) as pipe:
        if metric:
            stats.add_download_observation(pipe, metric, seconds, ending.size_bytes)
        add_events(pipe, done)
        await pipe.execute()
