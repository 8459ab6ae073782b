"""The bounded command pools (REDIS_MAX_CONNECTIONS, REDIS_POOL_WAIT_SECONDS) on a real
Redis: a command finding every connection busy waits for one, and past the wait fails
like an unreachable Redis (a ConnectionError, which the web answers with 503)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from calls.redis_client import client_for
from config.settings import RedisPool

EMPTY = "pool:nothing-here"
DEADLINE_S = 30.0


async def wait_for_async(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _holding_blpop(admin: Redis) -> bool:
    clients = await admin.client_list()
    return any(c.get("name") == "callrec-worker" and c.get("cmd") == "blpop" for c in clients)


async def test_a_full_pool_waits_for_a_connection(redis_url: str, redis: Redis) -> None:
    client = client_for(
        redis_url, cluster=False, purpose="worker", pool=RedisPool(max_connections=1, wait_s=30)
    )
    try:
        held = asyncio.ensure_future(client.blpop([EMPTY], timeout=1))
        await wait_for_async(lambda: _holding_blpop(redis), "the only connection held")
        # Queued behind the BLPOP, not refused: it runs once the connection is back.
        assert await client.set("pool:k", "v") is True
        assert await held is None
        names = [c.get("name") for c in await redis.client_list()]
        assert names.count("callrec-worker") == 1  # never a second connection
    finally:
        await client.aclose()


async def test_past_its_wait_a_command_fails_like_an_unreachable_redis(
    redis_url: str, redis: Redis
) -> None:
    client = client_for(
        redis_url, cluster=False, purpose="worker", pool=RedisPool(max_connections=1, wait_s=0)
    )
    try:
        held = asyncio.ensure_future(client.blpop([EMPTY], timeout=2))
        await wait_for_async(lambda: _holding_blpop(redis), "the only connection held")
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.get("pool:k")
        assert await held is None
    finally:
        await client.aclose()
