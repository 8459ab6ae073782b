"""The worker's maintenance loops in-process against the real Redis: lapsed leases,
claims of stale entries, delayed retries, repair of stuck calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from calls import keys
from calls.events import Event, publish
from calls.redis_values import text, texts
from consumers import handlers, maintenance
from consumers.context import WorkerContext
from consumers.entries import note_failure
from consumers.worker import Worker
from tests import worker_kit
from tests.worker_kit import (
    SHARDS,
    B,
    Starts,
    call_sid,
    dead_letter_fields,
    events,
    lease_token,
    pending_count,
    queue_of,
    slot_members,
    state_of,
    worker_context,
)
from twilio_sim import Simulator

A, C = call_sid(1), call_sid(2)


sim = worker_kit.one_simulator_per_module


@pytest.fixture
async def ctx(redis: Redis, sim: Simulator, tmp_path: Path) -> AsyncIterator[WorkerContext]:
    async with worker_context(redis, sim, tmp_path / "recordings", max_slots=1) as context:
        await Worker(context).ensure_group()
        yield context


async def request(ctx: WorkerContext, *sids: str) -> None:
    for sid in sids:
        await handlers.on_request(ctx, Event("request", B, sid), Starts())


async def start_events(redis: Redis) -> list[tuple[str, str]]:
    return [(e.sid, e.token) for e in await events(redis) if e.kind == "start"]


async def test_a_lapsed_lease_is_requeued_at_the_head_and_readmitted(
    redis: Redis, ctx: WorkerContext
) -> None:
    await request(ctx, A, C)
    old_token = await lease_token(redis, A)
    await redis.delete(keys.inflight(B, A))  # the worker died; its lease ran out
    await maintenance.reconcile_all(ctx)
    new_token = await lease_token(redis, A)
    assert new_token is not None and new_token != old_token
    assert await slot_members(redis) == {A}  # ahead of C, which waited behind it
    assert await queue_of(redis) == [C]
    assert await start_events(redis) == [(A, new_token)]


async def test_reconcile_leaves_live_leases_alone(redis: Redis, ctx: WorkerContext) -> None:
    await request(ctx, A, C)
    token = await lease_token(redis, A)
    await maintenance.reconcile_all(ctx)
    assert await lease_token(redis, A) == token
    assert await queue_of(redis) == [C]
    assert await start_events(redis) == []


async def test_stale_entries_of_a_dead_consumer_are_claimed_and_handled(
    redis: Redis, ctx: WorkerContext
) -> None:
    await publish(redis, SHARDS, Event("request", B, A, source="test"))
    await redis.xreadgroup(keys.EVENTS_GROUP, "dead-worker", {keys.EVENTS: ">"})
    worker = Worker(ctx)
    assert await maintenance.claim_stale(ctx, worker.handle, min_idle_ms=0) == 1
    assert await pending_count(redis) == 0
    assert await slot_members(redis) == {A}


async def test_entries_not_yet_idle_enough_are_not_claimed(
    redis: Redis, ctx: WorkerContext
) -> None:
    await publish(redis, SHARDS, Event("request", B, A, source="test"))
    await redis.xreadgroup(keys.EVENTS_GROUP, "busy-worker", {keys.EVENTS: ">"})
    assert await maintenance.claim_stale(ctx, Worker(ctx).handle, min_idle_ms=600_000) == 0
    assert await pending_count(redis) == 1
    assert await slot_members(redis) == set()


async def test_an_entry_delivered_too_often_is_dead_lettered_with_its_last_error(
    redis: Redis, ctx: WorkerContext
) -> None:
    fields: dict[FieldT, EncodableT] = {"kind": "request", "business_id": B, "sid": A}
    entry_id = text(await redis.xadd(keys.EVENTS, fields))
    await redis.xreadgroup(keys.EVENTS_GROUP, "dead-worker", {keys.EVENTS: ">"})
    await note_failure(redis, keys.EVENTS, entry_id, "OSError: [Errno 5] Input/output error")
    await redis.xclaim(
        keys.EVENTS,
        keys.EVENTS_GROUP,
        "dead-worker",
        0,
        [entry_id],
        retrycount=maintenance.MAX_DELIVERIES,
    )
    assert await maintenance.claim_stale(ctx, Worker(ctx).handle, min_idle_ms=0) == 0
    assert await pending_count(redis) == 0
    assert await slot_members(redis) == set()  # not handled a sixth time
    (letter,) = await dead_letter_fields(redis)
    assert (letter["business_id"], letter["sid"], letter["kind"]) == (B, A, "stream")
    assert letter["reason"] == (
        f"delivered {maintenance.MAX_DELIVERIES + 1} times; "
        "last error: OSError: [Errno 5] Input/output error"
    )


async def test_due_retries_re_enter_at_the_head_and_others_wait(
    redis: Redis, ctx: WorkerContext
) -> None:
    await request(ctx, A)
    await handlers.schedule_retry(ctx, B, C, 600_000)  # not due for ten minutes
    token = await lease_token(redis, A)
    retry = Event("done", B, A, token=token or "", outcome="retry", delay_ms=0)
    await handlers.on_done(ctx, retry)
    assert await slot_members(redis) == set()
    assert await maintenance.promote_due_retries(ctx) == 1
    assert await slot_members(redis) == {A}
    assert await start_events(redis) == [(A, await lease_token(redis, A))]
    assert texts(await redis.zrange(keys.DELAYED, 0, -1)) == [keys.delayed_member(B, C)]


async def test_a_call_stuck_with_nothing_to_move_it_is_repaired(
    redis: Redis, ctx: WorkerContext
) -> None:
    await request(ctx, A)
    token = await lease_token(redis, A)
    # A retry released but never scheduled (the done handler died in between).
    await ctx.slots.release(B, A, token or "", "retry")
    assert await state_of(redis, A) == "queued"
    # Fresh changes are left alone (a retry may be being scheduled); this one is old.
    assert await maintenance.repair_stuck(ctx, B) == 0
    await redis.hset(keys.call(B, A), "state_ms", 0)
    assert await maintenance.repair_stuck(ctx, B) == 1
    assert await slot_members(redis) == {A}
    assert await state_of(redis, A) == "processing"
    assert await start_events(redis) == [(A, await lease_token(redis, A))]


async def test_a_call_waiting_out_its_backoff_is_not_stuck(
    redis: Redis, ctx: WorkerContext
) -> None:
    await request(ctx, A)
    token = await lease_token(redis, A)
    retry = Event("done", B, A, token=token or "", outcome="retry", delay_ms=600_000)
    await handlers.on_done(ctx, retry)
    assert await maintenance.repair_stuck(ctx, B) == 0
    assert await slot_members(redis) == set()
    assert await start_events(redis) == []


async def test_maintenance_gives_a_business_lost_from_the_index_its_turn_again(
    redis: Redis, ctx: WorkerContext
) -> None:
    await request(ctx, A, C)
    await redis.delete(keys.inflight(B, A))  # A's holder died...
    await redis.hdel(SHARDS.of(B).live, B)  # ...and the index lost the business
    worker = Worker(ctx)
    worker.sweep.scan_count = 10_000  # one tick walks this small key space whole
    try:
        await worker._maintain()  # reconciles nobody, then the sweep puts B back
        assert await redis.hexists(SHARDS.of(B).live, B)
        assert await queue_of(redis) == [C]
        await worker._maintain()
        assert await slot_members(redis) == {A}  # requeued at the head, admitted again
        assert await lease_token(redis, A) is not None
        assert await queue_of(redis) == [C]
    finally:
        # A tick starts the stream readers: each ends once its blocking read returns,
        # closing nothing half-read on the test's client.
        worker.stop.set()
        await asyncio.gather(*worker.readers.values())
