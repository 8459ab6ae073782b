"""Downloads asked for by a backfill, kept out of the users' way.

A backfill of thousands of recordings must not put them ahead of a user's play click in
the business's FIFO queue. So they wait in a separate list, ``rec_backlog:{b}``, and a
worker loop hands them to the slots only while no user request waits and a slot is
free (``lua/backlog_feed.lua``); from there they are ordinary requests: same slots,
caps, dedup and retries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from calls import keys
from calls.events import Event, publish
from calls.redis_client import RedisClient, RedisPipeline
from calls.redis_values import texts
from calls.shards import ShardMap
from semaphore.scripts import plain

log = logging.getLogger(__name__)

SOURCE = "backfill"


def add(pipe: RedisPipeline, b: str, sids: Sequence[str]) -> None:
    """Queue ``sids`` (slot members) on ``pipe``; then :func:`announce` the business."""
    if sids:
        pipe.rpush(keys.backlog(b), *sids)


async def announce(redis: RedisClient, b: str) -> None:
    """Tell the feeder ``b`` has a backlog (after :func:`add`: the index is global, in
    another cluster slot than the business's keys)."""
    await redis.sadd(keys.BACKLOG_BUSINESSES, b)


class BacklogFeeder:
    def __init__(self, redis: RedisClient, max_slots: int, shards: ShardMap) -> None:
        self._redis = redis
        self._max_slots = max_slots
        self._shards = shards
        self._feed = plain(redis, "lifecycle", "backlog_feed.lua")

    async def feed(self, b: str) -> int:
        """Publish requests for what the business can take now; returns how many."""
        raw = await self._feed(
            keys=[keys.slots(b), keys.queue(b), keys.backlog(b)], args=[self._max_slots]
        )
        result = json.loads(raw)
        taken = [str(sid) for sid in result.get("taken", [])]
        if taken:
            await publish(
                self._redis,
                self._shards,
                *(Event("request", b, sid, source=SOURCE) for sid in taken),
            )
        if not result["left"]:
            # Emptied: stop visiting it (a later backfill adds it again). A backlog
            # refilled between the script and this SREM is found again by that add.
            await self._redis.srem(keys.BACKLOG_BUSINESSES, b)
            if await self._redis.llen(keys.backlog(b)):
                await self._redis.sadd(keys.BACKLOG_BUSINESSES, b)
        return len(taken)

    async def feed_all(self) -> int:
        total = 0
        for b in texts(await self._redis.smembers(keys.BACKLOG_BUSINESSES)):
            total += await self.feed(b)
        return total
