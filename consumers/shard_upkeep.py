"""Which event-stream shards a worker reads, tick by tick (``calls/shards.py``).

Every registered shard is read and maintained: the current ones, and those of a previous
``EVENT_STREAM_SHARDS`` still in the registry. A shard that is not current leaves the
registry once nothing can be lost by no longer reading it:

- its stream has nothing unread and nothing pending (every entry acknowledged),
- its delayed set and its index of businesses with live work are empty,
- and no entry was added for ``RETIRE_IDLE_MS``: a web or worker still running with the
  old setting (a rolling deploy) keeps writing to it, and it keeps being read meanwhile.

The stream itself is left in place (operators may look at it; a process with the old
setting that starts later registers it again).
"""

from __future__ import annotations

import logging

from redis.exceptions import ResponseError

from calls import keys, shards
from calls.redis_client import RedisClient
from calls.shards import Shard, ShardMap

log = logging.getLogger(__name__)

RETIRE_IDLE_MS = 10 * 60 * 1000


async def refresh(
    redis: RedisClient, shard_map: ShardMap, *, retire_idle_ms: int = RETIRE_IDLE_MS
) -> tuple[Shard, ...]:
    """The shards to read from now on; retires drained old ones from the registry."""
    registered = await shards.registered(redis, shard_map)
    current = shard_map.current
    keep = []
    for shard in registered:
        if shard in current or not await drained(redis, shard, retire_idle_ms):
            keep.append(shard)
            continue
        await redis.srem(keys.EVENT_STREAMS, shard.events)
        log.info("event stream %s drained: no longer read", shard.events)
    return tuple(keep)


async def drained(redis: RedisClient, shard: Shard, idle_ms: int) -> bool:
    """Nothing left in ``shard`` for anyone, and nothing written to it for ``idle_ms``."""
    if await redis.zcard(shard.delayed) or await redis.hlen(shard.live):
        return False
    if not await redis.exists(shard.events):
        return True
    try:
        info = await redis.xinfo_stream(shard.events)
        groups = await redis.xinfo_groups(shard.events)
    except ResponseError:
        return False
    last = info["last-generated-id"]
    last_id = last.decode() if isinstance(last, bytes) else str(last)
    for group in groups:
        delivered = group["last-delivered-id"]
        delivered_id = delivered.decode() if isinstance(delivered, bytes) else str(delivered)
        if int(group["pending"]) or delivered_id != last_id:
            return False
    now_s, now_us = await redis.time()
    now_ms = now_s * 1000 + now_us // 1000
    return now_ms - int(last_id.split("-")[0]) >= idle_ms
