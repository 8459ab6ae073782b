"""The web process's status hub against a real Redis: one reader fans each business's
entries out to that business's subscribers only; a business joining mid-block is read at
once; the caps refuse with TooManyStreams and free on leaving; a subscriber that falls
too far behind is ended; on a cluster (a real one-node cluster over TLS) it polls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from calls import keys
from calls.errors import TooManyStreams
from calls.redis_client import RedisClient
from calls.redis_values import StreamEntry
from ingest import status_hub
from ingest.status_hub import StatusHub, Subscription
from tests.tls_redis import TlsRedis, make_authority

DEADLINE_S = 30.0


async def _hub(
    redis: RedisClient, reader: RedisClient, *, cluster: bool = False, **caps: int
) -> StatusHub:
    hub = StatusHub(
        redis,
        reader,
        cluster=cluster,
        max_per_business=caps.get("max_per_business", 100),
        max_total=caps.get("max_total", 1000),
    )
    hub.start()
    return hub


@pytest.fixture
async def reader(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=60)
    yield client
    await client.aclose()


async def _next(sub: Subscription) -> StreamEntry | None:
    return await asyncio.wait_for(sub.queue.get(), DEADLINE_S)


async def _status(redis: RedisClient, b: str, status: str) -> str:
    entry_id = await redis.xadd(keys.status_stream(b), {"sid": "CA" + "0" * 32, "status": status})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def test_each_business_s_entries_reach_its_subscribers_and_no_other(
    redis: Redis, reader: Redis
) -> None:
    hub = await _hub(redis, reader)
    try:
        a = [hub.subscribe("a", "0-0") for _ in range(3)]
        b = [hub.subscribe("b", "0-0") for _ in range(2)]
        await hub.wake()
        first = await _status(redis, "a", "queued")
        for sub in a:
            got = await _next(sub)
            assert got is not None and got[0] == first and got[1]["status"] == "queued"
        # b's marker comes after a's entry: had a's reached b, it would be ahead of it.
        marker = await _status(redis, "b", "ready")
        for sub in b:
            got = await _next(sub)
            assert got is not None and got[0] == marker
        assert all(sub.queue.empty() for sub in a + b)
        assert hub.open_streams == 5
    finally:
        await hub.stop()


async def test_a_business_joining_mid_block_is_read_at_once(
    redis: Redis, reader: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A block longer than this test's deadline: only the wake-up can end it in time.
    monkeypatch.setattr(status_hub, "BLOCK_MS", 600_000)
    hub = await _hub(redis, reader)
    try:
        early = hub.subscribe("early", "0-0")
        await hub.wake()
        await _status(redis, "early", "queued")
        assert await _next(early) is not None  # the reader now blocks on "early" only
        late = hub.subscribe("late", await _status(redis, "late", "queued"))
        await hub.wake()
        entry_id = await _status(redis, "late", "processing")
        got = await _next(late)
        assert got is not None and got[0] == entry_id
    finally:
        await hub.stop()


async def test_the_caps_refuse_new_streams_and_free_up_when_streams_leave(
    redis: Redis, reader: Redis
) -> None:
    hub = await _hub(redis, reader, max_per_business=2, max_total=3)
    try:
        a1, a2 = hub.subscribe("a", "0-0"), hub.subscribe("a", "0-0")
        with pytest.raises(TooManyStreams, match="for this business"):
            hub.subscribe("a", "0-0")
        b1 = hub.subscribe("b", "0-0")
        with pytest.raises(TooManyStreams, match="on this web process"):
            hub.subscribe("c", "0-0")
        hub.unsubscribe(a1)
        hub.unsubscribe(a1)  # twice frees once
        assert hub.open_streams == 2
        a3 = hub.subscribe("a", "0-0")
        with pytest.raises(TooManyStreams):
            hub.subscribe("c", "0-0")
        for sub in (a2, a3, b1):
            hub.unsubscribe(sub)
        assert hub.open_streams == 0
        hub.subscribe("c", "0-0")
    finally:
        await hub.stop()


async def test_a_subscriber_that_falls_far_behind_is_ended_and_the_others_go_on(
    redis: Redis, reader: Redis
) -> None:
    hub = await _hub(redis, reader)
    try:
        slow = hub.subscribe("a", "0-0")
        fast = hub.subscribe("a", "0-0")
        await hub.wake()
        for _ in range(status_hub.QUEUE_MAX + 50):
            entry_id = await _status(redis, "a", "queued")
            got = await _next(fast)  # keeps up
            assert got is not None and got[0] == entry_id
        queued = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
        assert queued[-1] is None and len(queued) <= status_hub.QUEUE_MAX + 1
        assert slow.overflowed
    finally:
        await hub.stop()


async def test_on_a_cluster_the_hub_polls_every_subscribed_business(tmp_path: Path) -> None:
    ca = make_authority(tmp_path, "hub-ca")
    with TlsRedis(tmp_path, ca, cluster=True) as node:
        client = RedisCluster(
            host="127.0.0.1", port=node.port, ssl=True, ssl_ca_certs=str(ca.cert_path)
        )
        hub = await _hub(client, client, cluster=True)
        try:
            subs = {b: hub.subscribe(b, "0-0") for b in ("x", "y", "z")}
            await hub.wake()
            ids = {b: await _status(client, b, f"status-{b}") for b in subs}
            for b, sub in subs.items():
                got = await _next(sub)
                assert got is not None and got[0] == ids[b] and got[1]["status"] == f"status-{b}"
                assert sub.queue.empty()
        finally:
            await hub.stop()
            await client.aclose()
