"""The work stream: what web processes ask for and what workers tell each other.

Three kinds of entry on the work streams (``rec_events``, or one of its shards:
``calls/shards.py``; a business's entries always on one), read by the ``workers`` consumer group:

- ``request``: someone wants a recording stored (a play click, or a completed-recording
  webhook with prefetch on). Workers turn it into a slot admission or a queue entry.
- ``start``: a slot was granted to (business, sid) under fencing ``token``; whichever
  worker reads it downloads.
- ``done``: a download ended (``outcome`` ready|failed|retry|available); whichever worker
  reads it releases the slot and promotes the business's next request.

Entries are acknowledged as soon as the Redis state they stand for is written, so a
handler never holds an entry for the length of a download.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from calls.redis_client import RedisClient, RedisPipeline
from calls.redis_values import text_map
from calls.shards import ShardMap

Kind = Literal["request", "start", "done"]


@dataclass(frozen=True, slots=True)
class Event:
    kind: Kind
    business_id: str
    sid: str
    token: str = ""
    outcome: str = ""
    reason: str = ""
    source: str = ""
    delay_ms: int = 0  # done/retry: how long the request waits before it re-enters

    def fields(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items() if v}

    @classmethod
    def parse(cls, raw: Mapping[Any, Any]) -> Event:
        f = text_map(raw)
        kind = f.get("kind")
        if kind not in ("request", "start", "done") or "business_id" not in f or "sid" not in f:
            raise ValueError(f"not a callrec event: {f!r}")
        return cls(
            kind=kind,  # type: ignore[arg-type]
            business_id=f["business_id"],
            sid=f["sid"],
            token=f.get("token", ""),
            outcome=f.get("outcome", ""),
            reason=f.get("reason", ""),
            source=f.get("source", ""),
            delay_ms=int(f.get("delay_ms", "0") or 0),
        )


def add_events(pipe: RedisPipeline, shards: ShardMap, *events: Event) -> None:
    """Queue ``events`` on ``pipe`` (each on its business's shard), for callers that
    batch them with other commands."""
    # No MAXLEN here: trimming could drop entries nobody has acknowledged yet; the
    # worker's reconciler trims below the oldest pending entry instead.
    for event in events:
        pipe.xadd(shards.of(event.business_id).events, event.fields())  # type: ignore[arg-type]


async def publish(redis: RedisClient, shards: ShardMap, *events: Event) -> None:
    if len(events) == 1:
        stream = shards.of(events[0].business_id).events
        await redis.xadd(stream, events[0].fields())  # type: ignore[arg-type]
        return
    async with redis.pipeline(transaction=False) as pipe:
        add_events(pipe, shards, *events)
        await pipe.execute()


async def request_download(
    redis: RedisClient, shards: ShardMap, business_id: str, sid: str, source: str
) -> None:
    await publish(redis, shards, Event("request", business_id, sid, source=source))
