"""Queue positions from tickets: each queued SID's ticket minus the head's, plus one, is its
place however the queue moves, and a move costs one status entry (the slot scripts)."""

from __future__ import annotations

from redis.asyncio import Redis

from calls import keys
from calls.redis_values import entries, text
from semaphore import Slots

B = "biz1"


def sid(n: int) -> str:
    return f"CA{n:032x}"


async def status_entries(redis: Redis, after: str = "-") -> list[dict[str, str]]:
    rows = entries(await redis.xrange(keys.status_stream(B), min=after))
    return [f for i, f in rows if i != after]


async def newest_id(redis: Redis) -> str:
    rows = entries(await redis.xrevrange(keys.status_stream(B), count=1))
    return rows[0][0]


async def places_from_tickets(redis: Redis, head_ticket: int) -> dict[str, int]:
    """What a page computes: every queued SID's place from its ticket and the head's."""
    tickets = {
        text(k): int(v)
        for k, v in (await redis.hgetall(keys.tickets(B))).items()
        if text(k) != keys.TICKET_NEXT
    }
    return {s: t - head_ticket + 1 for s, t in tickets.items()}


async def exact_places(redis: Redis) -> dict[str, int]:
    return {text(s): i + 1 for i, s in enumerate(await redis.lrange(keys.queue(B), 0, -1))}


def last_head(rows: list[dict[str, str]]) -> int:
    return int([r["queue_head"] for r in rows if "queue_head" in r][-1])


async def test_tickets_give_every_place_as_the_queue_moves(redis: Redis) -> None:
    slots = Slots(redis, max_slots=3, lease_ms=60_000, queued_ttl_ms=60_000)
    tokens = {}
    for i in range(8):
        for a in (await slots.request(B, sid(i))).promoted:
            tokens[a.sid] = a.token
    seen = await status_entries(redis)
    # Admitted requests show "processing" only; waiting ones their place and ticket.
    assert [(r["sid"], r["status"], r["position"]) for r in seen] == [
        (sid(i), "processing", "") for i in range(3)
    ] + [(sid(i), "queued", str(i - 2)) for i in range(3, 8)]
    tickets = [int(r["ticket"]) for r in seen if r["status"] == "queued"]
    assert tickets == list(range(tickets[0], tickets[0] + 5))  # consecutive

    mark = await newest_id(redis)
    await slots.release(B, sid(0), tokens[sid(0)], "ready")
    after = await status_entries(redis, mark)
    # One entry per state change, one for the head: nobody else's state is rewritten.
    assert [(r.get("sid"), r.get("status")) for r in after] == [
        (sid(0), "ready"),
        (sid(3), "processing"),
        (None, None),
    ]
    assert await places_from_tickets(redis, last_head(after)) == await exact_places(redis)

    # A retry put back at the head moves everyone down by one; the tickets follow.
    mark = await newest_id(redis)
    await slots.release(B, sid(1), tokens[sid(1)], "retry")
    await slots.requeue(B, sid(1))
    after = await status_entries(redis, mark)
    assert [r["sid"] for r in after if r.get("status") == "processing"] == [sid(4)]
    places = await places_from_tickets(redis, last_head(after))
    assert places == await exact_places(redis)
    assert places == {sid(1): 1, sid(5): 2, sid(6): 3, sid(7): 4}


async def test_a_move_costs_one_entry_however_long_the_queue(redis: Redis) -> None:
    slots = Slots(redis, max_slots=1, lease_ms=60_000, queued_ttl_ms=60_000)
    first = await slots.request(B, sid(0))
    for i in range(1, 200):
        await slots.request(B, sid(i))
    mark = await newest_id(redis)
    await slots.release(B, sid(0), first.promoted[0].token, "ready")
    after = await status_entries(redis, mark)
    assert len(after) == 3  # ready, processing, the head's ticket
    places = await places_from_tickets(redis, last_head(after))
    assert places == await exact_places(redis)
    assert places[sid(199)] == 198


async def test_dead_members_back_at_the_head_take_tickets_below_it(redis: Redis) -> None:
    slots = Slots(redis, max_slots=2, lease_ms=60_000, queued_ttl_ms=60_000)
    for i in range(5):
        await slots.request(B, sid(i))
    # Both holders die: their leases go, and the next request finds them.
    await redis.delete(keys.inflight(B, sid(0)), keys.inflight(B, sid(1)))
    mark = await newest_id(redis)
    await slots.request(B, sid(5))
    after = await status_entries(redis, mark)
    head = last_head(after)
    assert await places_from_tickets(redis, head) == await exact_places(redis)
