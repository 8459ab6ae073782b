"""The stream handlers in-process against the real Redis: request, start and done, each
with its edge cases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from calls import keys, live_businesses
from calls.events import Event
from consumers import handlers
from consumers.context import WorkerContext
from tests import worker_kit
from tests.worker_kit import (
    B,
    Starts,
    call_sid,
    events,
    lease_token,
    queue_of,
    slot_members,
    state_of,
    worker_context,
)
from twilio_sim import Simulator

A, C, D = call_sid(1), call_sid(2), call_sid(3)


sim = worker_kit.one_simulator_per_module


@pytest.fixture
async def ctx(redis: Redis, sim: Simulator, tmp_path: Path) -> AsyncIterator[WorkerContext]:
    async with worker_context(redis, sim, tmp_path / "recordings", max_slots=1) as context:
        yield context


def request(sid: str) -> Event:
    return Event("request", B, sid, source="test")


async def test_request_admitted_starts_its_download_under_the_lease_token(
    redis: Redis, ctx: WorkerContext
) -> None:
    starts = Starts()
    await handlers.on_request(ctx, request(A), starts)
    assert await slot_members(redis) == {A}
    assert starts.calls == [(B, A, await lease_token(redis, A))]
    assert await state_of(redis, A) == "processing"
    assert list(await live_businesses.generations(redis, keys.LIVE_BUSINESSES)) == [
        B
    ]  # the reconciler's index


async def test_request_beyond_the_cap_is_queued_and_not_started(
    redis: Redis, ctx: WorkerContext
) -> None:
    starts = Starts()
    for sid in (A, C, D):
        await handlers.on_request(ctx, request(sid), starts)
    assert starts.sids == [A]
    assert await queue_of(redis) == [C, D]
    assert await state_of(redis, C) == "queued"


async def test_request_already_active_or_queued_is_coalesced(
    redis: Redis, ctx: WorkerContext
) -> None:
    starts = Starts()
    for sid in (A, C, A, C, A):
        await handlers.on_request(ctx, request(sid), starts)
    assert starts.sids == [A]
    assert await slot_members(redis) == {A}
    assert await queue_of(redis) == [C]


async def test_request_already_stored_takes_no_slot_and_says_ready(
    redis: Redis, ctx: WorkerContext
) -> None:
    (ctx.settings.recordings_dir / f"{A}.mp3").write_bytes(b"ID3 stored")
    starts = Starts()
    await handlers.on_request(ctx, request(A), starts)
    assert starts.calls == []
    assert await slot_members(redis) == set()
    assert await state_of(redis, A) == "ready"


async def test_request_for_a_call_without_recording_takes_no_slot(
    redis: Redis, ctx: WorkerContext
) -> None:
    await ctx.registry.mark_no_recording(B, A)
    starts = Starts()
    await handlers.on_request(ctx, request(A), starts)
    assert starts.calls == []
    assert await slot_members(redis) == set()
    assert await queue_of(redis) == []


async def test_start_runs_only_under_the_current_token(redis: Redis, ctx: WorkerContext) -> None:
    await ctx.slots.request(B, A)
    token = await lease_token(redis, A)
    assert token is not None
    starts = Starts()
    await handlers.on_start(ctx, Event("start", B, A, token=str(int(token) + 7)), starts)
    assert starts.calls == []  # stale: another admission's token
    await handlers.on_start(ctx, Event("start", B, A, token=token), starts)
    assert starts.calls == [(B, A, token)]


async def test_done_releases_and_promotes_the_next_in_line(
    redis: Redis, ctx: WorkerContext
) -> None:
    starts = Starts()
    for sid in (A, C, D):
        await handlers.on_request(ctx, request(sid), starts)
    token = await lease_token(redis, A)
    done = Event("done", B, A, token=token or "", outcome="ready")
    await handlers.on_done(ctx, done, starts)
    assert await state_of(redis, A) == "ready"
    assert await slot_members(redis) == {C}
    assert await queue_of(redis) == [D]
    assert starts.sids == [A, C]
    assert starts.calls[-1][2] == await lease_token(redis, C)
    # Handled twice (at-least-once delivery): the second frees nothing.
    await handlers.on_done(ctx, done, starts)
    assert await slot_members(redis) == {C}
    assert starts.sids == [A, C]


async def test_done_without_start_download_publishes_start_events(
    redis: Redis, ctx: WorkerContext
) -> None:
    for sid in (A, C):
        await handlers.on_request(ctx, request(sid), Starts())
    token = await lease_token(redis, A)
    await handlers.on_done(ctx, Event("done", B, A, token=token or "", outcome="failed"))
    assert await state_of(redis, A) == "failed"
    starts = [e for e in await events(redis) if e.kind == "start"]
    assert [(e.sid, e.token) for e in starts] == [(C, await lease_token(redis, C))]


async def test_done_retry_schedules_the_retry_after_its_delay(
    redis: Redis, ctx: WorkerContext
) -> None:
    await handlers.on_request(ctx, request(A), Starts())
    token = await lease_token(redis, A)
    now_s, now_us = await redis.time()
    before_ms = now_s * 1000 + now_us // 1000
    retry = Event("done", B, A, token=token or "", outcome="retry", delay_ms=60_000)
    await handlers.on_done(ctx, retry, Starts())
    due_ms = await redis.zscore(keys.DELAYED, keys.delayed_member(B, A))
    assert due_ms is not None and before_ms + 60_000 <= due_ms < before_ms + 70_000
    assert await slot_members(redis) == set()
    assert await state_of(redis, A) == "queued"


async def test_done_with_a_stale_token_neither_frees_nor_schedules(
    redis: Redis, ctx: WorkerContext
) -> None:
    await handlers.on_request(ctx, request(A), Starts())
    token = await lease_token(redis, A)
    stale = Event("done", B, A, token=str(int(token or "0") + 1), outcome="retry", delay_ms=1)
    await handlers.on_done(ctx, stale, Starts())
    assert await slot_members(redis) == {A}
    assert await redis.zcard(keys.DELAYED) == 0
