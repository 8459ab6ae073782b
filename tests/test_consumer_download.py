"""One download (``run_download``) in-process against the real Redis and simulator:
success, Twilio's failures, the attempt limit, fencing, and the release of its slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from calls import keys
from consumers.context import WorkerContext
from consumers.download_job import Ending, run_download
from tenants.permits import usage
from tests import worker_kit
from tests.worker_kit import (
    B,
    add_recording,
    call_sid,
    dead_letter_fields,
    events,
    lease_token,
    part_files,
    slot_members,
    state_of,
    stored,
    wait_until,
    worker_context,
)
from twilio_sim import Fault, SimRecording, Simulator
from twilio_sim.models import media_bytes

sim = worker_kit.one_simulator_per_module


@pytest.fixture
async def ctx(redis: Redis, sim: Simulator, tmp_path: Path) -> AsyncIterator[WorkerContext]:
    async with worker_context(redis, sim, tmp_path / "recordings", max_attempts=2) as context:
        yield context


async def admit(ctx: WorkerContext, sid: str) -> str:
    await ctx.slots.request(B, sid)
    token = await lease_token(ctx.redis, sid)
    assert token is not None
    return token


async def download(ctx: WorkerContext, rec: SimRecording) -> Ending:
    """Run one download to its end; returns how it ended. The download releases its
    slot itself (no done event on the stream): the lease is gone afterwards."""
    token = await admit(ctx, rec.call_sid)
    done = await run_download(ctx, B, rec.call_sid, token)
    assert done is not None
    assert await lease_token(ctx.redis, rec.call_sid) is None
    assert [e for e in await events(ctx.redis) if e.kind == "done"] == []
    return done


async def attempts(ctx: WorkerContext, sid: str) -> int:
    call = await ctx.registry.get(B, sid)
    return int(call.fields.get("attempts", "0")) if call else 0


async def test_success_stores_the_exact_bytes_and_reports_ready(
    sim: Simulator, ctx: WorkerContext
) -> None:
    rec = add_recording(sim, 1, size_bytes=200 * 1024)
    done = await download(ctx, rec)
    assert done.outcome == "ready"
    path = ctx.settings.recordings_dir / f"{rec.call_sid}.mp3"
    assert path.read_bytes() == media_bytes(rec)
    assert part_files(ctx) == []
    call = await ctx.registry.get(B, rec.call_sid)
    assert call is not None and call.fields["rec_sid"] == rec.recording_sid


async def test_not_ready_404_is_retried_after_a_short_wait_then_succeeds(
    sim: Simulator, ctx: WorkerContext
) -> None:
    rec = add_recording(sim, 2)
    sim.set_faults(rec.recording_sid, [Fault.not_found()])
    first = await download(ctx, rec)
    assert (first.outcome, first.reason) == ("retry", "media 404 (not ready yet)")
    # 1-3 base units (10-30 ms here), capped at 50 ms.
    assert 10 <= first.delay_ms <= 50
    assert not stored(ctx, rec.call_sid)
    assert await attempts(ctx, rec.call_sid) == 1
    second = await download(ctx, rec)
    assert second.outcome == "ready"
    assert stored(ctx, rec.call_sid)
    assert await attempts(ctx, rec.call_sid) == 0  # a success resets the count


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retried(sim: Simulator, ctx: WorkerContext, status: int) -> None:
    rec = add_recording(sim, 3)
    sim.set_faults(rec.recording_sid, [Fault.server_error(status)])
    done = await download(ctx, rec)
    assert (done.outcome, done.reason) == ("retry", f"media {status}")
    assert not stored(ctx, rec.call_sid)


async def test_a_429_is_waited_out_in_place_and_spends_no_attempt(
    sim: Simulator, ctx: WorkerContext
) -> None:
    rec = add_recording(sim, 4)
    # More 429s than attempts allowed (5): all waited out (Retry-After, then backoff).
    sim.set_faults(
        rec.recording_sid, [Fault.too_many(retry_after_s=0.05)] + [Fault.too_many()] * 5
    )
    done = await download(ctx, rec)
    assert done.outcome == "ready"
    assert stored(ctx, rec.call_sid)
    assert await attempts(ctx, rec.call_sid) == 0
    assert sim.media_requests(rec.recording_sid) == 7
    [account] = await usage(ctx.redis, 20)
    assert (account.account_sid, account.throttled, account.in_use) == (sim.account_sid, 6, 0)


async def test_a_stalled_body_times_out_and_is_retried(
    redis: Redis, sim: Simulator, tmp_path: Path
) -> None:
    rec = add_recording(sim, 12)
    sim.set_faults(rec.recording_sid, [Fault.stall(60.0)])
    async with worker_context(redis, sim, tmp_path / "slow", read_timeout_s=0.2) as ctx:
        done = await download(ctx, rec)
        assert (done.outcome, done.reason) == ("retry", "timeout (ReadTimeout)")
        assert not stored(ctx, rec.call_sid)
        assert part_files(ctx) == []


async def test_a_body_cut_short_leaves_no_file(sim: Simulator, ctx: WorkerContext) -> None:
    rec = add_recording(sim, 5, size_bytes=256 * 1024)
    sim.set_faults(rec.recording_sid, [Fault.cut_off(after_bytes=100 * 1024)])
    done = await download(ctx, rec)
    assert done.outcome == "retry"
    assert not stored(ctx, rec.call_sid)
    assert part_files(ctx) == []


async def test_a_client_error_fails_at_once_with_a_dead_letter(
    sim: Simulator, ctx: WorkerContext
) -> None:
    rec = add_recording(sim, 6)
    sim.set_faults(rec.recording_sid, [Fault.server_error(403)])
    done = await download(ctx, rec)
    assert (done.outcome, done.reason) == ("failed", "media 403")
    (letter,) = await dead_letter_fields(ctx.redis)
    assert (letter["sid"], letter["reason"], letter["attempts"]) == (rec.call_sid, "media 403", "1")


async def test_the_attempt_limit_turns_retries_into_failed(
    sim: Simulator, ctx: WorkerContext
) -> None:
    rec = add_recording(sim, 7)
    sim.set_faults(rec.recording_sid, [Fault.server_error(500)] * 2)
    assert (await download(ctx, rec)).outcome == "retry"
    assert (await download(ctx, rec)).outcome == "failed"  # max_attempts=2
    (letter,) = await dead_letter_fields(ctx.redis)
    assert (letter["kind"], letter["attempts"]) == ("download", "2")


async def test_a_call_without_recording_at_twilio_ends_with_none(ctx: WorkerContext) -> None:
    sid = call_sid(8)  # the simulator lists no recording for it
    token = await admit(ctx, sid)
    done = await run_download(ctx, B, sid, token)
    assert done is not None and done.outcome == "none"
    assert await state_of(ctx.redis, sid) == "none"
    call = await ctx.registry.get(B, sid)
    assert call is not None and call.twilio_recording == "absent"


async def test_stored_meanwhile_is_ready_without_asking_twilio(
    sim: Simulator, ctx: WorkerContext
) -> None:
    rec = add_recording(sim, 9)
    (ctx.settings.recordings_dir / f"{rec.call_sid}.mp3").write_bytes(b"stored by another")
    assert (await download(ctx, rec)).outcome == "ready"
    assert sim.media_requests(rec.recording_sid) == 0


async def test_a_lost_lease_means_no_rename_and_no_done_event(
    redis: Redis, sim: Simulator, ctx: WorkerContext
) -> None:
    rec = add_recording(sim, 10)
    token = await admit(ctx, rec.call_sid)
    sim.hold_media = True
    task = asyncio.create_task(run_download(ctx, B, rec.call_sid, token))
    try:

        async def media_asked() -> bool:
            return sim.media_requests(rec.recording_sid) == 1

        await wait_until(media_asked, "the media request to arrive")
        # Another worker took the slot over while this one was stalled.
        await redis.set(keys.inflight(B, rec.call_sid), "newer-token")
    finally:
        sim.hold_media = False
    assert await asyncio.wait_for(task, 20) is None  # nothing recorded, nothing released
    assert sim.completed_downloads(rec.recording_sid) == 1  # fetched whole, then fenced
    assert not stored(ctx, rec.call_sid)
    assert part_files(ctx) == []
    assert [e for e in await events(redis) if e.kind == "done"] == []
    assert await lease_token(redis, rec.call_sid) == "newer-token"
    assert rec.call_sid in await slot_members(redis)


async def test_a_lost_lease_means_a_failure_is_not_counted(
    redis: Redis, sim: Simulator, ctx: WorkerContext
) -> None:
    rec = add_recording(sim, 11)
    sim.set_faults(rec.recording_sid, [Fault.server_error(500)])
    token = await admit(ctx, rec.call_sid)
    await redis.set(keys.inflight(B, rec.call_sid), "newer-token")
    assert await run_download(ctx, B, rec.call_sid, token) is None
    assert await attempts(ctx, rec.call_sid) == 0
    assert [e for e in await events(redis) if e.kind == "done"] == []
    assert await dead_letter_fields(redis) == []
