"""The dead-letter stream: requests given up on, with the reason, for operators."""

from __future__ import annotations

from dataclasses import dataclass

from calls import keys, stats
from calls.events import Event, publish
from calls.redis_client import RedisClient
from calls.redis_values import entries
from calls.shards import ShardMap


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    business_id: str
    sid: str
    reason: str
    attempts: int
    kind: str


async def dead_letter(
    redis: RedisClient,
    shards: ShardMap,
    b: str,
    sid: str,
    *,
    reason: str,
    attempts: int,
    kind: str = "download",
) -> None:
    await redis.xadd(
        keys.DEAD_LETTERS,
        {"business_id": b, "sid": sid, "reason": reason, "attempts": attempts, "kind": kind},
    )
    await stats.count(redis, shards.of(b).stats, "dead_letters")


async def list_dead_letters(redis: RedisClient, count: int = 100) -> list[DeadLetter]:
    out = []
    for entry_id, f in entries(await redis.xrange(keys.DEAD_LETTERS, count=count)):
        out.append(
            DeadLetter(
                id=entry_id,
                business_id=f.get("business_id", ""),
                sid=f.get("sid", ""),
                reason=f.get("reason", ""),
                attempts=int(f.get("attempts", "0")),
                kind=f.get("kind", ""),
            )
        )
    return out


async def requeue_dead_letter(redis: RedisClient, shards: ShardMap, letter: DeadLetter) -> None:
    """Give a dead letter a fresh set of attempts and request it again."""
    await redis.hdel(keys.call(letter.business_id, letter.sid), "attempts", "reason")
    await publish(redis, shards, Event("request", letter.business_id, letter.sid, source="requeue"))
    await redis.xdel(keys.DEAD_LETTERS, letter.id)
