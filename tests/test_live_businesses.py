"""The index of businesses with live work, against a real Redis: the reconciler and
/metrics cost what the businesses with work cost, not every business ever seen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from calls import keys, live_businesses
from calls.events import Event
from calls.redis_client import RedisClient
from calls.shards import ShardMap
from consumers.context import WorkerContext
from consumers.handlers import on_done, on_request
from consumers.maintenance import reconcile_all
from ingest.metrics import _per_business
from semaphore import Slots
from tests.worker_kit import call_sid, offline_context

SHARDS = ShardMap(1)


@pytest.fixture
async def ctx(
    redis: RedisClient, redis_url: str, tmp_path: Path
) -> AsyncIterator[WorkerContext]:
    async with offline_context(redis, redis_url, tmp_path, shards=SHARDS) as context:
        yield context


async def request_and_finish(ctx: WorkerContext, b: str, n: int) -> None:
    await on_request(ctx, Event("request", b, call_sid(n)))
    token = await ctx.redis.get(keys.inflight(b, call_sid(n)))
    assert isinstance(token, bytes)
    await on_done(ctx, Event("done", b, call_sid(n), token=token.decode(), outcome="ready"))


async def calls_of(redis: RedisClient, command: str) -> int:
    stats = await redis.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if isinstance(entry, dict) else 0


async def test_reconciler_and_metrics_cost_follows_businesses_with_work(
    ctx: WorkerContext,
) -> None:
    redis = ctx.redis
    for i in range(50):
        await request_and_finish(ctx, f"done{i}", i)
    await on_request(ctx, Event("request", "busy", call_sid(1)))
    await reconcile_all(ctx)  # finds the 50 idle and drops them

    scripts = await calls_of(redis, "evalsha")
    await reconcile_all(ctx)
    # "busy" alone: its reconcile, and a repair look at its processing call.
    assert await calls_of(redis, "evalsha") - scripts == 2

    scards = await calls_of(redis, "scard")
    per_business = await _per_business(redis, SHARDS.current)
    assert per_business == [("busy", 1, 0)]
    assert await calls_of(redis, "scard") - scards == 1


async def test_reconciler_keeps_businesses_with_any_live_work(ctx: WorkerContext) -> None:
    redis = ctx.redis
    for i in range(4):  # three slots held, one queued
        await on_request(ctx, Event("request", "busy", call_sid(i)))
    await request_and_finish(ctx, "done", 10)
    # Stuck: says processing with no slot, no queue entry, no retry (a lost event).
    await on_request(ctx, Event("request", "stuck", call_sid(20)))
    await redis.srem(keys.slots("stuck"), call_sid(20))
    await redis.delete(keys.inflight("stuck", call_sid(20)))
    await redis.hset(keys.call("stuck", call_sid(20)), "state_ms", 0)
    assert set(await live_businesses.generations(redis, keys.LIVE_BUSINESSES)) == {
        "busy",
        "done",
        "stuck",
    }

    assert await reconcile_all(ctx) == 1
    assert set(await live_businesses.generations(redis, keys.LIVE_BUSINESSES)) == {"busy", "stuck"}
    # The stuck call was repaired, so its business still has work (a slot now).
    assert await redis.sismember(keys.slots("stuck"), call_sid(20))


async def test_a_request_racing_the_reconciler_keeps_its_business(redis: Redis) -> None:
    slots = Slots(redis, max_slots=3, lease_ms=60_000, queued_ttl_ms=60_000)
    await live_businesses.note(redis, SHARDS, "b")
    generation = (await live_businesses.generations(redis, keys.LIVE_BUSINESSES))["b"]
    assert (await slots.reconcile("b")).idle
    # A request's script runs after the reconciler's found the business idle; it notes
    # the business after its script, before the reconciler gets to forget it ...
    await slots.request("b", call_sid(1))
    await live_businesses.note(redis, SHARDS, "b")
    assert not await live_businesses.forget_if_unchanged(
        redis, keys.LIVE_BUSINESSES, "b", generation
    )
    assert "b" in await live_businesses.generations(redis, keys.LIVE_BUSINESSES)
    # ... or after: then the note puts it back.
    generation = (await live_businesses.generations(redis, keys.LIVE_BUSINESSES))["b"]
    await slots.request("c", call_sid(2))
    assert await live_businesses.forget_if_unchanged(redis, keys.LIVE_BUSINESSES, "b", generation)
    await live_businesses.note(redis, SHARDS, "b")
    assert "b" in await live_businesses.generations(redis, keys.LIVE_BUSINESSES)


async def test_the_legacy_index_is_adopted_then_emptied(ctx: WorkerContext) -> None:
    redis = ctx.redis
    await redis.sadd(keys.LEGACY_BUSINESSES, "old-idle", "old-busy")
    await ctx.slots.request("old-busy", call_sid(1))
    await reconcile_all(ctx)
    assert not await redis.exists(keys.LEGACY_BUSINESSES)
    assert set(await live_businesses.generations(redis, keys.LIVE_BUSINESSES)) == {"old-busy"}
