"""The account permit scripts against a real Redis and a cluster: the cap across
processes, round robin between businesses, FIFO within one, leases of dead holders, AIMD,
cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from calls import keys
from calls.redis_client import RedisClient
from tenants.permits import AccountPermits, Permit, usage
from tests.clients import on_server_and_cluster

A = "AC" + "a" * 32


def permits(
    redis: RedisClient,
    *,
    limit: int,
    proc: str,
    lease_ms: int = 15_000,
    proc_ttl_ms: int = 5_000,
    cooldown_ms: int = 1_000,
) -> AccountPermits:
    return AccountPermits(
        redis, max_per_account=limit, proc=proc, poll_s=0.005, lease_ms=lease_ms,
        proc_ttl_ms=proc_ttl_ms, cooldown_ms=cooldown_ms,
    )  # fmt: skip


class Gauge:
    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            yield
        finally:
            self.now -= 1


# One server only: on the cluster, 60 tasks' first commands on a fresh client trip
# redis-py's asyncio cluster connection-setup race (AttributeError on a connection's
# writer; calls/redis_client.is_transient), which this module does not exercise.
async def test_cap_holds_across_processes_and_everyone_is_served(redis: RedisClient) -> None:
    procs = [permits(redis, limit=5, proc=f"p{i}") for i in range(3)]
    gauge = Gauge()
    served: list[str] = []

    async def request(i: int) -> None:
        p = procs[i % 3]
        async with p.hold(A, f"b{i % 7}") as permit:
            with gauge.inside():
                await asyncio.sleep(0.005)
            permit.report("ok")
        served.append(f"{i}")

    await asyncio.wait_for(asyncio.gather(*(request(i) for i in range(60))), 30)
    assert len(served) == 60
    assert gauge.peak == 5
    assert await redis.scard(keys.PERMITS.format(a=A)) == 0
    assert await redis.llen(keys.RING.format(a=A)) == 0


@on_server_and_cluster
async def test_round_robin_between_businesses_fifo_within_one(redis: RedisClient) -> None:
    p = permits(redis, limit=1, proc="p1")
    order: list[str] = []
    gate = asyncio.Event()

    async def request(b: str, n: int) -> None:
        async with p.hold(A, b):
            order.append(f"{b}{n}")
            await gate.wait()

    async def queued(b: str, n: int) -> None:
        while await redis.llen(keys.WAIT_PREFIX.format(a=A) + b) < n:  # noqa: ASYNC110
            await asyncio.sleep(0.002)

    # The first holds the only permit until the rest are queued, one after another (the
    # order of arrival is the FIFO order): A has 49 waiting, then B asks once.
    tasks = [asyncio.create_task(request("a", 0))]
    while not order:  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    for n in range(1, 50):
        tasks.append(asyncio.create_task(request("a", n)))
        await queued("a", n)
    tasks.append(asyncio.create_task(request("b", 0)))
    await queued("b", 1)
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    # B's one request goes right after A's next one: turns, not A's whole backlog.
    assert order.index("b0") <= 2, order[:5]
    a_order = [x for x in order if x.startswith("a")]
    assert a_order == [f"a{n}" for n in range(50)]


@on_server_and_cluster
async def test_dead_holders_permit_comes_back_through_the_poll(redis: RedisClient) -> None:
    dead = permits(redis, limit=1, proc="dead", lease_ms=300)
    # A holder that never returns its permit nor renews it (its process was killed).
    await dead._acquire(A, "b1", False)
    alive = permits(redis, limit=1, proc="alive")
    async with asyncio.timeout(10):
        async with alive.hold(A, "b2") as permit:
            assert permit.id.startswith("alive|")


@on_server_and_cluster
async def test_waiters_of_a_dead_process_are_skipped(redis: RedisClient) -> None:
    p = permits(redis, limit=1, proc="p1")
    first = await p._acquire(A, "b1", False)
    # A waiter whose process then died: nothing polls for it, its liveness key lapses.
    dead = permits(redis, limit=1, proc="dead", proc_ttl_ms=200)
    own = [
        *keys.permit_proc_keys(A, "dead"),
        keys.permit_wait(A, "ghost"),
        keys.permit_lease(A, "dead|1"),
    ]
    await dead._run("acquire", A, own, "dead|1", "ghost", "0")
    other = permits(redis, limit=1, proc="p2")
    waiting = asyncio.create_task(other._acquire(A, "b2", False))
    while await redis.llen(keys.WAIT_PREFIX.format(a=A) + "b2") < 1:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    while await redis.exists(keys.PROC_PREFIX.format(a=A) + "dead"):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await p._release(Permit(first, A, "ok"))
    async with asyncio.timeout(10):
        assert (await waiting).startswith("p2|")
    assert await redis.llen(keys.WAIT_PREFIX.format(a=A) + "ghost") == 0


@on_server_and_cluster
async def test_a_cancelled_waiter_leaves_its_line(redis: RedisClient) -> None:
    p = permits(redis, limit=1, proc="p1")
    await p._acquire(A, "b1", False)
    waiter = asyncio.create_task(p._acquire(A, "b2", False))
    while await redis.llen(keys.WAIT_PREFIX.format(a=A) + "b2") < 1:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    assert await redis.llen(keys.WAIT_PREFIX.format(a=A) + "b2") == 0
    assert await redis.llen(keys.RING.format(a=A)) == 0
    assert await redis.scard(keys.PERMITS.format(a=A)) == 1


@on_server_and_cluster
async def test_429_halves_the_limit_successes_raise_it_back(redis: RedisClient) -> None:
    p = permits(redis, limit=8, proc="p1", cooldown_ms=0)
    async with p.hold(A, "b1") as permit:
        permit.report("throttled")
    [u] = await usage(redis, 8)
    assert (u.limit, u.throttled, u.in_use) == (4, 1, 0)
    async with p.hold(A, "b1") as permit:
        permit.report("throttled", concurrent=3)
    [u] = await usage(redis, 8)
    assert (u.limit, u.throttled) == (2, 2)
    for _ in range(2):
        async with p.hold(A, "b1") as permit:
            permit.report("ok")
    [u] = await usage(redis, 8)
    assert u.limit == 3
    # Twilio saying the account is already at the limit: no increase.
    for _ in range(6):
        async with p.hold(A, "b1") as permit:
            permit.report("ok", concurrent=3)
    [u] = await usage(redis, 8)
    assert u.limit == 3


@on_server_and_cluster
async def test_a_cooldown_keeps_a_burst_of_429s_from_collapsing_the_limit(
    redis: RedisClient,
) -> None:
    p = permits(redis, limit=16, proc="p1", cooldown_ms=60_000)
    for _ in range(5):
        async with p.hold(A, "b1") as permit:
            permit.report("throttled")
    [u] = await usage(redis, 16)
    assert (u.limit, u.throttled) == (8, 5)


@on_server_and_cluster
async def test_a_stalled_process_gets_its_dropped_waiters_back_in_line(redis: RedisClient) -> None:
    p = permits(redis, limit=1, proc="p1")
    first = await p._acquire(A, "b1", False)
    slow = permits(redis, limit=1, proc="slow", proc_ttl_ms=200)
    waiting = asyncio.create_task(slow._acquire(A, "b2", False))
    while await redis.llen(keys.WAIT_PREFIX.format(a=A) + "b2") < 1:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    # The process stalls (its poller does not run) past its liveness: a release meanwhile
    # drops its waiter from the line.
    poller = slow._waiting[A].poller
    assert poller is not None
    poller.cancel()
    while await redis.exists(keys.PROC_PREFIX.format(a=A) + "slow"):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await p._release(Permit(first, A, "ok"))
    assert await redis.llen(keys.WAIT_PREFIX.format(a=A) + "b2") == 0  # dropped
    # It wakes up: its next poll puts the waiter back at the head, and it is granted.
    slow._waiting[A].poller = asyncio.create_task(slow._poll(A, slow._waiting[A]))
    async with asyncio.timeout(10):
        assert (await waiting).startswith("slow|")


@on_server_and_cluster
async def test_a_long_line_of_dead_waiters_is_dropped_a_budget_at_a_time(
    redis: RedisClient,
) -> None:
    """A call drops a bounded number of dead waiters (the keys it read before writing:
    permits_prelude.lua, "Cluster safety"); the polls that follow drop the rest and reach
    the live waiter behind them."""
    p = permits(redis, limit=1, proc="p1")
    first = await p._acquire(A, "b1", False)
    dead = permits(redis, limit=1, proc="dead", proc_ttl_ms=200)
    for n in range(1, 41):
        own = [
            *keys.permit_proc_keys(A, "dead"),
            keys.permit_wait(A, "ghost"),
            keys.permit_lease(A, f"dead|{n}"),
        ]
        await dead._run("acquire", A, own, f"dead|{n}", "ghost", "0")
    other = permits(redis, limit=1, proc="p2")
    waiting = asyncio.create_task(other._acquire(A, "b2", False))
    while await redis.llen(keys.permit_wait(A, "b2")) < 1:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    while await redis.exists(keys.permit_proc_keys(A, "dead")[0]):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await p._release(Permit(first, A, "ok"))
    # One release could not drop all 40: some are still in line after it.
    assert 0 < await redis.llen(keys.permit_wait(A, "ghost")) < 40
    async with asyncio.timeout(10):
        assert (await waiting).startswith("p2|")
