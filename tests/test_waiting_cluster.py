"""On a cluster, a burst of commands past the pool waits for a connection (as the
single-server client's BlockingConnectionPool does) instead of failing at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import MaxConnectionsError

from calls.redis_client import client_for, is_transient
from config.settings import RedisPool

KEY = "rec_queue:{waiting-pool}"  # one slot: every command on one node
BURST = 12
BLOCK_S = 0.3


async def _blocking_pops(client: RedisCluster, n: int) -> list[object]:
    return await asyncio.gather(*(client.blpop([KEY], timeout=BLOCK_S) for _ in range(n)))


async def test_without_the_gate_a_full_node_pool_fails_at_once(cluster_url: str) -> None:
    """Why the gate exists: redis-py's own cluster pool raises when full."""
    plain = RedisCluster.from_url(cluster_url, max_connections=2)
    try:
        with pytest.raises(MaxConnectionsError):
            await _blocking_pops(plain, BURST)
    finally:
        await plain.aclose()


@contextlib.asynccontextmanager
async def _web_client(url: str, pool: RedisPool) -> AsyncIterator[RedisCluster]:
    """The cluster client a web process opens, with ``pool``."""
    client = client_for(url, cluster=True, purpose="web", pool=pool)
    assert isinstance(client, RedisCluster)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_burst_four_times_the_pool_waits_and_is_served(cluster_url: str) -> None:
    async with _web_client(cluster_url, RedisPool(max_connections=3, wait_s=10)) as client:
        # Served, where redis-py's pool alone raises (above): no node's pool went past
        # its 3 connections, the burst waited for them instead.
        assert await _blocking_pops(client, BURST) == [None] * BURST

        async def piped() -> list[object]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.blpop([KEY], timeout=BLOCK_S)
                pipe.exists(KEY)
                return await pipe.execute()

        # Pipelines take their turn too (each holds one connection per node it reaches).
        assert await asyncio.gather(*(piped() for _ in range(BURST))) == [[None, 0]] * BURST


async def test_a_burst_that_waits_too_long_fails_as_transient(cluster_url: str) -> None:
    async with _web_client(cluster_url, RedisPool(max_connections=2, wait_s=0)) as client:
        pops = (client.blpop([KEY], timeout=BLOCK_S) for _ in range(BURST))
        outcomes = await asyncio.gather(*pops, return_exceptions=True)
        # Two got a turn and were served; every other one failed at once, as transient
        # (a 503 on the web, a retry in the worker).
        assert outcomes.count(None) == 2
        refused = [o for o in outcomes if isinstance(o, MaxConnectionsError)]
        assert len(refused) == BURST - 2
        assert all(is_transient(o) for o in refused)
        assert "no free Redis connection within 0s" in str(refused[0])
        # The turns were given back: the client still serves.
        assert await client.rpush(KEY, "y") == 1
