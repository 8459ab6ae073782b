"""The slot scripts against a real Redis: caps, FIFO, leases, idempotency, fencing."""

from __future__ import annotations

import asyncio
import hashlib

from redis.asyncio import Redis

from calls import keys
from calls.redis_values import entries, text, texts
from semaphore import Slots
from semaphore.scripts import with_prelude

B = "biz1"


def sid(n: int) -> str:
    return f"CA{n:032x}"


def make_slots(redis: Redis, *, lease_ms: int = 60_000, queued_ttl_ms: int = 60_000) -> Slots:
    return Slots(redis, max_slots=3, lease_ms=lease_ms, queued_ttl_ms=queued_ttl_ms)


async def test_three_admitted_rest_queued_in_order(redis: Redis) -> None:
    slots = make_slots(redis)
    verdicts = [(await slots.request(B, sid(i))).verdict for i in range(6)]
    assert verdicts == ["admitted"] * 3 + ["queued"] * 3
    assert await redis.scard(keys.slots(B)) == 3
    queue = texts(await redis.lrange(keys.queue(B), 0, -1))
    assert queue == [sid(3), sid(4), sid(5)]
    assert (await slots.request(B, sid(5))).position == 3


async def test_request_is_idempotent(redis: Redis) -> None:
    slots = make_slots(redis)
    for _ in range(3):
        await slots.request(B, sid(0))
    await slots.request(B, sid(1))
    again = await slots.request(B, sid(0))
    assert again.verdict == "active"
    assert await redis.scard(keys.slots(B)) == 2
    for i in range(2, 5):
        await slots.request(B, sid(i))
    waiting = await slots.request(B, sid(4))
    assert waiting.verdict == "waiting"
    assert await redis.llen(keys.queue(B)) == 2
    assert await redis.scard(keys.queued(B)) == 2


async def test_release_promotes_head_and_is_idempotent(redis: Redis) -> None:
    slots = make_slots(redis)
    admitted = {}
    for i in range(5):
        r = await slots.request(B, sid(i))
        for a in r.promoted:
            admitted[a.sid] = a.token
    first = await slots.release(B, sid(0), admitted[sid(0)], "ready")
    assert first.released
    assert [a.sid for a in first.promoted] == [sid(3)]
    second = await slots.release(B, sid(0), admitted[sid(0)], "ready")
    assert not second.released and not second.promoted
    assert await redis.scard(keys.slots(B)) == 3
    assert texts(await redis.lrange(keys.queue(B), 0, -1)) == [sid(4)]


async def test_stale_token_cannot_release(redis: Redis) -> None:
    slots = make_slots(redis)
    r = await slots.request(B, sid(0))
    token = r.promoted[0].token
    result = await slots.release(B, sid(0), str(int(token) + 99), "ready")
    assert not result.released
    assert await slots.holds(B, sid(0), token)


async def test_expired_lease_frees_slot_and_requeues_at_head(redis: Redis) -> None:
    slots = make_slots(redis, lease_ms=200)
    for i in range(4):
        await slots.request(B, sid(i))
    # sid(0..2) hold slots, sid(3) waits. Let every lease lapse without renewal.
    await asyncio.sleep(0.4)
    assert await redis.scard(keys.slots(B)) == 3  # the SET still lists them ...
    result = await slots.reconcile(B)
    # ... but members without a lease do not count: they go back to the head, in
    # front of sid(3), and take the freed slots again with new tokens.
    assert {a.sid for a in result.promoted} == {sid(0), sid(1), sid(2)}
    assert texts(await redis.lrange(keys.queue(B), 0, -1)) == [sid(3)]
    assert await redis.scard(keys.slots(B)) == 3


async def test_renew_keeps_only_the_current_holder(redis: Redis) -> None:
    slots = make_slots(redis, lease_ms=300)
    token = (await slots.request(B, sid(0))).promoted[0].token
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await slots.renew(B, sid(0), token)
    assert await redis.exists(keys.inflight(B, sid(0)))
    assert not await slots.renew(B, sid(0), "not-the-token")


async def test_stale_queued_entries_are_dropped_from_list_and_set(redis: Redis) -> None:
    slots = make_slots(redis, queued_ttl_ms=100)
    tokens = {}
    for i in range(4):
        for a in (await slots.request(B, sid(i))).promoted:
            tokens[a.sid] = a.token
    await asyncio.sleep(0.25)
    result = await slots.release(B, sid(0), tokens[sid(0)], "ready")
    assert result.dropped == (sid(3),)
    assert await redis.llen(keys.queue(B)) == 0
    assert await redis.scard(keys.queued(B)) == 0
    assert await redis.hget(keys.call(B, sid(3)), "state") == b"failed"


async def test_reconcile_repairs_queue_and_set_out_of_step(redis: Redis) -> None:
    slots = make_slots(redis)
    for i in range(3):
        await slots.request(B, sid(i))
    await redis.sadd(keys.queued(B), sid(7))  # in the set, missing from the list
    await redis.rpush(keys.queue(B), sid(8))  # in the list, missing from the set
    await slots.reconcile(B)
    assert set(await redis.smembers(keys.queued(B))) == {sid(7).encode(), sid(8).encode()}
    assert sorted(await redis.lrange(keys.queue(B), 0, -1)) == [sid(7).encode(), sid(8).encode()]


async def test_businesses_are_independent(redis: Redis) -> None:
    slots = make_slots(redis)
    for i in range(5):
        await slots.request("a", sid(i))
    other = await slots.request("b", sid(99))
    assert other.verdict == "admitted"


async def test_concurrent_requests_never_exceed_cap(redis: Redis) -> None:
    slots = make_slots(redis)
    results = await asyncio.gather(*(slots.request(B, sid(i)) for i in range(50)))
    assert sum(r.verdict == "admitted" for r in results) == 3
    assert await redis.scard(keys.slots(B)) == 3
    assert await redis.llen(keys.queue(B)) == 47


async def status_events(redis: Redis, after: str = "-") -> list[tuple[str, str, str]]:
    """State changes (the queue-head entries left out)."""
    rows = entries(await redis.xrange(keys.status_stream(B), min=after))
    return [(f["sid"], f["status"], f["position"]) for i, f in rows if i != after and "sid" in f]


async def place_from_ticket(redis: Redis, n: int) -> int:
    """A waiting SID's place as a page computes it: its ticket minus the head's, plus one."""
    head = text(await redis.lindex(keys.queue(B), 0))
    mine, heads = await redis.hmget(keys.tickets(B), [sid(n), head])
    assert mine is not None and heads is not None
    return int(text(mine)) - int(text(heads)) + 1


async def newest_event_id(redis: Redis) -> str:
    rows = entries(await redis.xrevrange(keys.status_stream(B), count=1))
    return rows[0][0] if rows else "-"


async def strand(redis: Redis, n: int) -> None:
    """A call that says processing, with no slot, no queue entry and no retry waiting:
    the event that would have moved it on was lost (long enough ago to be stuck)."""
    await redis.hset(keys.call(B, sid(n)), mapping={"state": "processing", "state_ms": 0})
    await redis.sadd(keys.pending(B), sid(n))


async def test_repair_announces_queue_positions(redis: Redis) -> None:
    slots = Slots(redis, max_slots=1, lease_ms=60_000, queued_ttl_ms=60_000)
    await slots.request(B, sid(0))  # holds the one slot
    await slots.request(B, sid(1))  # waits, position 1
    await strand(redis, 2)
    mark = await newest_event_id(redis)
    result = await slots.repair(B, [sid(2)])
    assert result.position == 1  # one stuck call requeued
    # Back at the head: the page watching sid(2) must stop showing "processing", and
    # sid(1) moved back one place (its ticket against the new head's says so).
    assert await status_events(redis, mark) == [(sid(2), "queued", "1")]
    assert await place_from_ticket(redis, 1) == 2
    assert await place_from_ticket(redis, 2) == 1
    assert await redis.hget(keys.call(B, sid(2)), "state") == b"queued"


async def test_repair_of_many_announces_every_requeued_call(redis: Redis) -> None:
    """More stuck calls than the position window: those pushed beyond it by later ones
    are still told they are queued, with their place."""
    slots = Slots(redis, max_slots=1, lease_ms=60_000, queued_ttl_ms=60_000)
    await slots.request(B, sid(0))
    stuck = list(range(100, 170))
    for n in stuck:
        await strand(redis, n)
    mark = await newest_event_id(redis)
    result = await slots.repair(B, [sid(n) for n in stuck])
    assert result.position == len(stuck)
    announced = {s: p for s, st, p in await status_events(redis, mark) if st == "queued"}
    queue = texts(await redis.lrange(keys.queue(B), 0, -1))
    assert announced == {s: str(i + 1) for i, s in enumerate(queue)}
    assert sorted(queue) == sorted(sid(n) for n in stuck)


async def test_results_say_when_a_business_is_idle(redis: Redis) -> None:
    slots = make_slots(redis)
    assert (await slots.reconcile(B)).idle
    admitted = await slots.request(B, sid(0))
    assert not admitted.idle
    assert not (await slots.reconcile(B)).idle
    released = await slots.release(B, sid(0), admitted.promoted[0].token, "retry")
    # Waiting out a backoff: still pending, so still live work (repair may need it).
    assert not released.idle and released.active == 0 and released.queue_len == 0
    await slots.requeue(B, sid(0))
    token = (await slots.request(B, sid(0))).promoted
    assert token == ()  # requeue admitted it already: "active"
    holder = await redis.get(keys.inflight(B, sid(0)))
    assert isinstance(holder, bytes)
    assert (await slots.release(B, sid(0), holder.decode(), "ready")).idle


async def test_every_slot_operation_is_its_own_script(redis: Redis) -> None:
    """One script per operation (no op argument), each the shared prelude plus its body."""
    slots = make_slots(redis)
    admitted = await slots.request(B, sid(0))
    await slots.release(B, sid(0), admitted.promoted[0].token, "ready")
    await slots.requeue(B, sid(1))
    await slots.reconcile(B)
    await slots.repair(B, [sid(1)])
    ops = ("request", "release", "requeue", "reconcile", "repair")
    shas = [hashlib.sha1(with_prelude("semaphore", f"{op}.lua").encode()).hexdigest() for op in ops]
    assert len(set(shas)) == len(ops)
    assert await redis.script_exists(*shas) == [True] * len(ops)


async def test_request_for_a_dead_member_admits_it_once(redis: Redis) -> None:
    """Its worker died (lease lapsed) and the recording is asked for again before any
    reconcile: it goes back in once, not at the head and at the tail."""
    slots = make_slots(redis, lease_ms=100)
    first = await slots.request(B, sid(0))
    await asyncio.sleep(0.25)
    again = await slots.request(B, sid(0))
    assert again.verdict == "admitted"
    assert [a.sid for a in again.promoted] == [sid(0)]
    assert await redis.llen(keys.queue(B)) == 0
    assert await slots.holds(B, sid(0), again.promoted[0].token)
    assert again.promoted[0].token != first.promoted[0].token
