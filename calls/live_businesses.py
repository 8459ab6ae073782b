"""The index of businesses with live work: a slot held, a request queued, or a call
still pending (queued/processing, which repair may have to move on). The reconciler and
``/metrics`` walk it, so their cost follows the businesses with work, not every
business ever seen.

There is one index per event-stream shard (``calls/shards.py``), a business always in
its shard's. The slot scripts touch only their business's hash-tagged keys (one cluster
slot), so the index is kept by their callers:

- after a slot script that may create work (request, requeue), the caller notes the
  business: ``HINCRBY`` bumps its generation (adding it when absent);
- the reconciler reads the generations, reconciles each business, and when the script
  reports it idle, drops it only if its generation is unchanged (``forget_business.lua``).

A request whose script ran after the reconciler found the business idle notes it after
that, so the business is either kept (generation moved) or added back. A process that
dies between a script and its note leaves its stream entry unacknowledged: whichever
worker handles it again notes the business then.

The index is derived: the business's own keys say whether it has work. Workers sweep
the primaries for those keys (``consumers/live_sweep.py``) and add any business the
index misses (:func:`note_missing`), so an index entry lost anyway (a shard's primary
lost with more than its last writes, an operator's DEL) delays that business's repair
by one sweep at most, never strands it.
"""

from __future__ import annotations

from calls.keys import LEGACY_BUSINESSES
from calls.redis_client import RedisClient
from calls.redis_values import text_map, texts
from calls.shards import ShardMap
from semaphore.scripts import plain

# Businesses taken over from the legacy index per call (it is emptied as it goes).
ADOPT_BATCH = 1000


async def note(redis: RedisClient, shards: ShardMap, b: str) -> None:
    """``b`` may have work now: keep it in its shard's index (call after the slot script)."""
    await redis.hincrby(shards.of(b).live, b, 1)


async def generations(redis: RedisClient, live_key: str) -> dict[str, str]:
    """Every business in one shard's index (``live_key``) and its generation, for
    :func:`forget_if_unchanged`."""
    return text_map(await redis.hgetall(live_key))


async def forget_if_unchanged(redis: RedisClient, live_key: str, b: str, generation: str) -> bool:
    """Drop ``b`` (found idle) from ``live_key`` unless work was noted for it since
    ``generation``."""
    script = plain(redis, "calls", "forget_business.lua")
    dropped = await script(keys=[live_key], args=[b, generation])
    return int(dropped) == 1


async def adopt_legacy(redis: RedisClient, shards: ShardMap) -> int:
    """Move businesses from the pre-upgrade index into this one (the reconciler then
    drops the idle ones); returns how many were moved."""
    moved = texts(await redis.spop(LEGACY_BUSINESSES, ADOPT_BATCH) or [])
    if moved:
        async with redis.pipeline(transaction=False) as pipe:
            for b in moved:
                pipe.hincrby(shards.of(b).live, b, 1)
            await pipe.execute()
    return len(moved)


async def note_missing(redis: RedisClient, shards: ShardMap, businesses: list[str]) -> list[str]:
    """Add those of ``businesses`` (found with work by the sweep) that their shard's index
    lacks; returns them. A business already indexed keeps its generation, so a sweep
    never keeps an idle business the reconciler is about to drop."""
    if not businesses:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for b in businesses:
            pipe.hsetnx(shards.of(b).live, b, 0)
        added = await pipe.execute()
    return [b for b, was_added in zip(businesses, added, strict=True) if int(was_added) == 1]
