"""Event-stream shards: ``EVENT_STREAM_SHARDS`` work streams, each with the keys every
download touches beside it (its retries waiting, its index of businesses with live work,
its counters), so no key is touched by every worker on every download.

- One shard (the default) is the original layout: ``rec_events``, ``rec_delayed``,
  ``rec_live_businesses``, ``rec_stats``, untagged.
- N shards: ``rec_events:{<tag>}`` and its companions, all under the shard's hash tag, so
  a shard lives in one cluster slot (a script or a transaction may touch all four) and
  the N shards' slots are spread evenly over 0..16383 (:func:`shard_tags`), hence over
  the primaries' slot ranges.
- A business's events, retries, index entry and counters always go to one shard:
  ``crc32(business_id) % N`` (stable across processes and versions, unlike ``hash()``).

Changing N on a running deployment loses nothing: every process adds the streams it
writes to the registry ``rec_event_streams`` at start, workers read and maintain every
registered shard (old and new), and a shard no longer among the current ones leaves the
registry only once it is drained and has had no new entry for ``RETIRE_IDLE_MS``
(``consumers/shard_upkeep.py``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from calls import keys
from calls.redis_client import RedisClient
from calls.redis_values import texts


@dataclass(frozen=True, slots=True)
class Shard:
    """One work stream and its companion keys."""

    tag: str | None  # None: the original, untagged layout

    @property
    def events(self) -> str:
        return keys.EVENTS if self.tag is None else keys.EVENTS_SHARD.format(tag=self.tag)

    @property
    def delayed(self) -> str:
        return keys.DELAYED if self.tag is None else keys.DELAYED_SHARD.format(tag=self.tag)

    @property
    def live(self) -> str:
        return (
            keys.LIVE_BUSINESSES
            if self.tag is None
            else keys.LIVE_BUSINESSES_SHARD.format(tag=self.tag)
        )

    @property
    def stats(self) -> str:
        return keys.STATS if self.tag is None else keys.STATS_SHARD.format(tag=self.tag)

    @classmethod
    def of_stream(cls, stream: str) -> Shard:
        """The shard whose work stream is ``stream`` (a name from the registry)."""
        if stream == keys.EVENTS:
            return cls(None)
        prefix, suffix = keys.EVENTS_SHARD.split("{tag}")
        if stream.startswith(prefix) and stream.endswith(suffix):
            tag = stream[len(prefix) : len(stream) - len(suffix)]
            if tag:
                return cls(tag)
        raise ValueError(f"not an event stream: {stream!r}")


# Tags are tried from this pool; 20,000 candidates cover every slot window for any N up
# to a few thousand shards.
TAG_POOL = 20_000


@cache
def shard_tags(count: int) -> tuple[str, ...]:
    """``count`` short tags whose CRC16 slots are the closest to evenly spaced (the middle
    of each of ``count`` equal windows of 0..16383), so N shards spread over M primaries'
    contiguous slot ranges as evenly as N allows."""
    by_slot: dict[int, str] = {}
    for j in range(TAG_POOL):
        by_slot.setdefault(key_slot(f"ev{j}".encode()), f"ev{j}")
    slots = sorted(by_slot)
    tags: list[str] = []
    for i in range(count):
        target = (2 * i + 1) * REDIS_CLUSTER_HASH_SLOTS // (2 * count)
        nearest = min((s for s in slots if by_slot[s] not in tags), key=lambda s: abs(s - target))
        tags.append(by_slot[nearest])
    return tuple(tags)


@dataclass(frozen=True, slots=True)
class ShardMap:
    """The current shards and which one each business belongs to."""

    count: int

    @property
    def current(self) -> tuple[Shard, ...]:
        return _current(self.count)

    def of(self, business_id: str) -> Shard:
        shards = self.current
        if len(shards) == 1:
            return shards[0]
        return shards[zlib.crc32(business_id.encode()) % len(shards)]


@cache
def _current(count: int) -> tuple[Shard, ...]:
    if count == 1:
        return (Shard(None),)
    return tuple(Shard(t) for t in shard_tags(count))


async def register(redis: RedisClient, shards: ShardMap) -> None:
    """Add the current shards' streams to the registry (every process, at start), so
    workers configured with another N read them too."""
    await redis.sadd(keys.EVENT_STREAMS, *(s.events for s in shards.current))


async def registered(redis: RedisClient, shards: ShardMap) -> tuple[Shard, ...]:
    """Every shard workers must read and maintain: the current ones, then any other in
    the registry (a previous N's, until retired), in a stable order."""
    names = sorted(texts(await redis.smembers(keys.EVENT_STREAMS)))
    current = shards.current
    others = []
    for name in names:
        try:
            shard = Shard.of_stream(name)
        except ValueError:
            continue
        if shard not in current:
            others.append(shard)
    return (*current, *others)
