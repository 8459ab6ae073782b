"""Queue positions on the status stream stay right as the queue moves (the slot scripts)."""

from __future__ import annotations

from redis.asyncio import Redis

from calls import keys
from calls.redis_values import entries
from semaphore import Slots

B = "biz1"
POSITION_BOUND = 50  # documented in semaphore/lua/prelude.lua


def sid(n: int) -> str:
    return f"CA{n:032x}"


async def status_events(redis: Redis, after: str = "-") -> list[tuple[str, str, str, str]]:
    rows = entries(await redis.xrange(keys.status_stream(B), min=after))
    return [(i, f["sid"], f["status"], f["position"]) for i, f in rows if i != after]


async def newest_id(redis: Redis) -> str:
    rows = entries(await redis.xrevrange(keys.status_stream(B), count=1))
    return rows[0][0]


async def test_promotion_announces_every_waiting_position(redis: Redis) -> None:
    slots = Slots(redis, max_slots=3, lease_ms=60_000, queued_ttl_ms=60_000)
    tokens = {}
    for i in range(8):
        for a in (await slots.request(B, sid(i))).promoted:
            tokens[a.sid] = a.token
    seen = [(s, st, p) for _, s, st, p in await status_events(redis)]
    # Admitted requests show "processing" only; waiting ones their place at the tail.
    assert seen == [(sid(i), "processing", "") for i in range(3)] + [
        (sid(i), "queued", str(i - 2)) for i in range(3, 8)
    ]
    mark = await newest_id(redis)
    await slots.release(B, sid(0), tokens[sid(0)], "ready")
    after = [(s, st, p) for _, s, st, p in await status_events(redis, mark)]
    assert after == [
        (sid(0), "ready", ""),
        (sid(3), "processing", ""),
        *[(sid(i), "queued", str(i - 3)) for i in range(4, 8)],
    ]
    # A request put back at the head moves everyone down by one.
    mark = await newest_id(redis)
    await slots.release(B, sid(1), tokens[sid(1)], "retry")
    await slots.requeue(B, sid(1))
    after = [(s, st, p) for _, s, st, p in await status_events(redis, mark)]
    promoted_now = [s for s, st, _ in after if st == "processing"]
    assert promoted_now == [sid(4)]  # the retry freed a slot, the head took it
    last_positions = {s: p for s, st, p in after if st == "queued"}
    assert last_positions == {sid(1): "1", sid(5): "2", sid(6): "3", sid(7): "4"}


async def test_position_events_are_bounded(redis: Redis) -> None:
    slots = Slots(redis, max_slots=1, lease_ms=60_000, queued_ttl_ms=60_000)
    first = await slots.request(B, sid(0))
    for i in range(1, POSITION_BOUND + 20):
        await slots.request(B, sid(i))
    mark = await newest_id(redis)
    await slots.release(B, sid(0), first.promoted[0].token, "ready")
    after = await status_events(redis, mark)
    queued = [(s, p) for _, s, st, p in after if st == "queued"]
    assert queued == [(sid(i + 1), str(i)) for i in range(1, POSITION_BOUND + 1)]
    assert await redis.llen(keys.queue(B)) == POSITION_BOUND + 18
