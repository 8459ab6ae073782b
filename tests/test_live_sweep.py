"""The sweep that gives the index of businesses with live work back what it lost, against
a real Redis and the embedded 3-primary cluster: a business whose index entry is gone
is found from its own keys and reconciled again; idle businesses are not added; each
tick is one bounded SCAN per primary, the walk carried on by a cursor between ticks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from calls import keys, live_businesses
from calls.events import Event
from calls.redis_client import RedisClient, primary_names
from calls.redis_values import texts
from calls.shards import ShardMap
from consumers.context import WorkerContext
from consumers.handlers import on_request
from consumers.live_sweep import LiveSweep, SweepTick
from consumers.maintenance import reconcile_all
from tests.clients import on_server_and_cluster
from tests.worker_kit import call_sid, offline_context

pytestmark = on_server_and_cluster

SHARDS = ShardMap(3)
# More ticks than any walk here needs (a few hundred keys, 50 per SCAN).
MAX_TICKS = 200


@pytest.fixture
async def ctx(
    redis: RedisClient, redis_url: str, tmp_path: Path
) -> AsyncIterator[WorkerContext]:
    async with offline_context(redis, redis_url, tmp_path, shards=SHARDS) as context:
        yield context


async def full_pass(sweep: LiveSweep, redis: RedisClient) -> list[SweepTick]:
    """Ticks until every primary's walk has come back to its start."""
    done: set[str] = set()
    ticks = []
    primaries = set(primary_names(redis))
    for _ in range(MAX_TICKS):
        ticks.append(await sweep.tick(redis, SHARDS))
        done |= {name for name, cursor in sweep.cursors.items() if cursor == 0}
        if done >= primaries:
            return ticks
    raise AssertionError(f"no full pass in {MAX_TICKS} ticks: {sweep.cursors}")


async def indexed(redis: RedisClient, b: str) -> bool:
    return bool(await redis.hexists(SHARDS.of(b).live, b))


async def test_business_lost_from_the_index_is_found_and_served_again(
    ctx: WorkerContext,
) -> None:
    redis = ctx.redis
    b = "swept"
    for n in range(5):  # 3 admitted, 2 queued
        await on_request(ctx, Event("request", b, call_sid(n)))
    assert len(await redis.smembers(keys.slots(b))) == 3
    # The holders died (their leases gone) and the index lost the business: as after a
    # failover that lost both.
    for n in range(3):
        await redis.delete(keys.inflight(b, call_sid(n)))
    await redis.hdel(SHARDS.of(b).live, b)

    for shard in SHARDS.current:
        await reconcile_all(ctx, shard=shard)
    # Stranded: nobody visits it, its dead members keep every slot.
    assert set(texts(await redis.lrange(keys.queue(b), 0, -1))) == {call_sid(3), call_sid(4)}
    assert not await indexed(redis, b)

    ticks = await full_pass(LiveSweep(scan_count=50), redis)
    assert [t for t in ticks if b in t.renoted]
    assert await indexed(redis, b)

    for shard in SHARDS.current:
        await reconcile_all(ctx, shard=shard)
    # Dead members went back to the head and took the slots again: live leases now.
    members = texts(await redis.smembers(keys.slots(b)))
    assert len(members) == 3
    for m in members:
        assert await redis.exists(keys.inflight(b, m))
    assert await redis.llen(keys.queue(b)) == 2


async def test_idle_and_indexed_businesses_are_left_alone(ctx: WorkerContext) -> None:
    redis = ctx.redis
    # Idle: a call and its status history, but nothing queued, held or pending.
    await redis.hset(keys.call("idle", call_sid(1)), mapping={"state": "ready"})
    await redis.xadd(keys.status_stream("idle"), {"sid": call_sid(1), "status": "ready"})
    # Busy and indexed: its generation must not move (the reconciler compares it).
    await on_request(ctx, Event("request", "busy", call_sid(2)))
    generation = await redis.hget(SHARDS.of("busy").live, "busy")

    ticks = await full_pass(LiveSweep(scan_count=50), redis)

    assert not [t for t in ticks if t.renoted]
    assert not await indexed(redis, "idle")
    assert await redis.hget(SHARDS.of("busy").live, "busy") == generation
    assert sum(t.keys_found for t in ticks) >= 1  # busy's slot set (and pending call)


async def test_each_tick_is_one_bounded_scan_per_primary(ctx: WorkerContext) -> None:
    redis = ctx.redis
    # A key space mostly of keys that are not work, and a few businesses with work.
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(600):
            pipe.hset(keys.call(f"quiet{n % 20}", call_sid(n)), "state", "ready")
        await pipe.execute()
    busy = [f"busy{i}" for i in range(6)]
    for i, b in enumerate(busy):
        await on_request(ctx, Event("request", b, call_sid(1000 + i)))
        await redis.hdel(SHARDS.of(b).live, b)

    sweep = LiveSweep(scan_count=50)
    ticks = await full_pass(sweep, redis)

    primaries = len(primary_names(redis))
    assert all(t.primaries == primaries for t in ticks)
    # 600+ keys at about 50 a SCAN: the walk takes several ticks, each one SCAN a primary.
    assert len(ticks) > 3
    assert sorted(b for t in ticks for b in t.renoted) == busy
    for b in busy:
        assert await indexed(redis, b)


async def test_a_primary_gone_takes_its_cursor_with_it(ctx: WorkerContext) -> None:
    sweep = LiveSweep(scan_count=50)
    sweep.cursors["127.0.0.1:1"] = 12345  # a primary failed over since the last tick
    await sweep.tick(ctx.redis, SHARDS)
    assert set(sweep.cursors) == set(primary_names(ctx.redis))


async def test_note_missing_adds_only_the_absent(redis: RedisClient) -> None:
    await live_businesses.note(redis, SHARDS, "known")
    before = await redis.hget(SHARDS.of("known").live, "known")
    added = await live_businesses.note_missing(redis, SHARDS, ["known", "new1", "new2"])
    assert added == ["new1", "new2"]
    assert await redis.hget(SHARDS.of("known").live, "known") == before
    assert await live_businesses.note_missing(redis, SHARDS, []) == []
