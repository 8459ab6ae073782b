"""The index of businesses with live work: a slot held, a request queued, or a call
still pending (queued/processing, which repair may have to move on). The reconciler and
``/metrics`` walk it, so their cost follows the businesses with work, not every
business ever seen.

The slot scripts touch only their business's hash-tagged keys (one cluster slot), so
this global index is kept by their callers:

- after a slot script that may create work (request, requeue), the caller notes the
  business: ``HINCRBY`` bumps its generation (adding it when absent);
- the reconciler reads the generations, reconciles each business, and when the script
  reports it idle, drops it only if its generation is unchanged (``forget_business.lua``).

A request whose script ran after the reconciler found the business idle notes it after
that, so the business is either kept (generation moved) or added back. A process that
dies between a script and its note leaves its stream entry unacknowledged: whichever
worker handles it again notes the business then.
"""

from __future__ import annotations

from calls.keys import LEGACY_BUSINESSES, LIVE_BUSINESSES
from calls.redis_client import RedisClient
from calls.redis_values import text_map, texts
from semaphore.scripts import lua_text

# Businesses taken over from the legacy index per call (it is emptied as it goes).
ADOPT_BATCH = 1000


async def note(redis: RedisClient, b: str) -> None:
    """``b`` may have work now: keep it in the index (call after the slot script)."""
    await redis.hincrby(LIVE_BUSINESSES, b, 1)


async def generations(redis: RedisClient) -> dict[str, str]:
    """Every indexed business and its generation, for :func:`forget_if_unchanged`."""
    return text_map(await redis.hgetall(LIVE_BUSINESSES))


async def forget_if_unchanged(redis: RedisClient, b: str, generation: str) -> bool:
    """Drop ``b`` (found idle) unless work was noted for it since ``generation``."""
    script = redis.register_script(lua_text("calls", "forget_business.lua"))
    dropped = await script(keys=[LIVE_BUSINESSES], args=[b, generation])
    return int(dropped) == 1


async def adopt_legacy(redis: RedisClient) -> int:
    """Move businesses from the pre-upgrade index into this one (the reconciler then
    drops the idle ones); returns how many were moved."""
    moved = texts(await redis.spop(LEGACY_BUSINESSES, ADOPT_BATCH) or [])
    if moved:
        async with redis.pipeline(transaction=False) as pipe:
            for b in moved:
                pipe.hincrby(LIVE_BUSINESSES, b, 1)
            await pipe.execute()
    return len(moved)
