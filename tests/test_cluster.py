"""callrec on a Redis/Valkey cluster (3 primaries, a replica each): what only a cluster
can do to it. A slot migrating under a script, event streams sharded across primaries,
changing the number of shards on a running deployment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from callrec.embedded_cluster import EmbeddedCluster
from calls import keys, shards
from calls.events import Event
from calls.redis_client import RedisClient, client_for, is_transient
from calls.redis_values import stream_entries, texts
from calls.shards import Shard, ShardMap, shard_tags
from consumers import shard_upkeep
from semaphore import Slots
from tests import readiness
from tests.clients import sync_redis
from tests.helpers import play, play_until_stored, register
from tests.stack import Stack
from twilio_sim import Simulator, media_bytes


def sid(n: int) -> str:
    return f"CA{n:032x}"


async def slot_snapshot(client: RedisCluster, b: str, sids: list[str]) -> dict[str, object]:
    """Every key of business ``b`` (its slot keys, and its calls' and leases'), dumped."""
    names = [*keys.business_keys(b)]
    for s in sids:
        names += [keys.call(b, s), keys.inflight(b, s)]
    return {n: await client.dump(n) for n in names}


async def test_scripts_abort_before_writing_when_their_slot_migrates(
    redis_cluster: EmbeddedCluster, cluster_url: str
) -> None:
    """A slot migration that already moved one member's lease. Scripts whose KEYS are all
    still local run, and must touch derived keys (other members' leases, queued calls):
    a release (whose own writes come first in its body) and a reconcile with a queue
    entry to restore both fail on the derived keys having written nothing; once the
    migration ends they run on the new node."""
    client = client_for(cluster_url, cluster=True, purpose="worker")
    assert isinstance(client, RedisCluster)
    slots = Slots(client, max_slots=3, lease_ms=60_000, queued_ttl_ms=600_000)
    b = "migrating"
    sids = [sid(i) for i in range(5)]
    for s in sids:
        await slots.request(b, s)  # three admitted, two queued
    # A lost write left the last queued call in the dedup set only: reconcile restores it.
    await client.lrem(keys.queue(b), 0, sids[4])
    token = await client.get(keys.inflight(b, sids[1]))
    assert isinstance(token, bytes)
    slot = key_slot(keys.slots(b).encode())
    source = redis_cluster.node_of_slot(slot)
    target = next(n for n in redis_cluster.primary_nodes() if n is not source)
    before = await slot_snapshot(client, b, sids)

    redis_cluster.begin_migration(slot, target)
    try:
        # The lease of a slot member moves first: the scripts find it "not local".
        redis_cluster.migrate_keys(source, target, [keys.inflight(b, sids[0]).encode()])
        for operation in (
            slots.release(b, sids[1], token.decode(), "ready"),
            slots.reconcile(b),
        ):
            with pytest.raises(Exception) as failed:
                await operation
            assert is_transient(failed.value), str(failed.value)
        # Nothing was written by the failed scripts: the business is exactly as it was.
        assert await slot_snapshot(client, b, sids) == before
    finally:
        redis_cluster.finish_migration(slot, source, target)
    assert redis_cluster.node_of_slot(slot) is target
    assert await slot_snapshot(client, b, sids) == before
    released = await slots.release(b, sids[1], token.decode(), "ready")
    assert released.released and [a.sid for a in released.promoted] == [sids[3]]
    result = await slots.reconcile(b)
    assert result.active == 3 and result.queue_len == 1
    await client.aclose()


async def test_connect_detects_a_cluster_or_a_server(cluster_url: str, server_url: str) -> None:
    from redis.asyncio import Redis

    from calls.redis_client import connect
    from config.settings import load_settings

    for url, kind in ((cluster_url, RedisCluster), (server_url, Redis)):
        client = await connect(load_settings({"REDIS_URL": url}), purpose="worker")
        assert isinstance(client, kind)
        await client.set("probe", "1")
        assert await client.get("probe") == b"1"
        await client.aclose()


def test_cluster_errors_are_transient_and_disk_errors_are_not() -> None:
    from redis.exceptions import ClusterDownError, ResponseError, TryAgainError

    assert is_transient(ClusterDownError("CLUSTERDOWN The cluster is down"))
    assert is_transient(TryAgainError("Multiple keys request during rehashing of slot"))
    assert is_transient(
        ResponseError(
            "Unable to execute command 'exists' in script because undeclared keys were "
            "accessed during rehashing of the slot script: b86..., on @user_script:93."
        )
    )
    assert not is_transient(ResponseError("ERR Error running script: attempt to index nil"))
    assert not is_transient(OSError(28, "No space left on device"))


def test_shard_tags_spread_over_the_primaries_slot_ranges() -> None:
    for count in (3, 6, 9):
        per_third = [0, 0, 0]
        for tag in shard_tags(count):
            per_third[key_slot(tag.encode()) * 3 // 16384] += 1
        assert per_third == [count // 3] * 3, (count, per_third)
    shards = ShardMap(6)
    # A business is always on one shard, the same in every process (crc32, not hash()).
    assert shards.of("biz-1") == ShardMap(6).of("biz-1")
    assert len({shards.of(f"biz-{i}").events for i in range(200)}) == 6
    # A shard's stream and companions share one slot: one node, one round trip.
    for shard in shards.current:
        assert (
            len(
                {
                    key_slot(k.encode())
                    for k in (shard.events, shard.delayed, shard.live, shard.stats)
                }
            )
            == 1
        )


def test_one_shard_is_the_original_layout() -> None:
    (shard,) = ShardMap(1).current
    assert (shard.events, shard.delayed, shard.live, shard.stats) == (
        keys.EVENTS,
        keys.DELAYED,
        keys.LIVE_BUSINESSES,
        keys.STATS,
    )


@pytest.fixture
def cluster_stack(tmp_path: Path, cluster_url: str, sim: Simulator) -> Iterator[Stack]:
    s = Stack.around(sim, tmp=tmp_path, redis_url=cluster_url, PREFETCH_ON_WEBHOOK="false")
    try:
        yield s
    finally:
        s.stop()


def test_changing_the_number_of_shards_mid_run_loses_nothing(
    cluster_stack: Stack, sim: Simulator
) -> None:
    """Requests accepted by a web with one stream, then a web and a worker with three:
    the worker reads the old stream beside its own shards, and every request is served."""
    old_web = cluster_stack.start_web(EVENT_STREAM_SHARDS="1")
    old = [register(sim, old_web, f"rs{i % 3}", 300 + i) for i in range(6)]
    for rec in old:
        assert play(old_web, rec.business_id, rec.call_sid).status_code == 202
    new_web = cluster_stack.start_web(EVENT_STREAM_SHARDS="3")
    worker = cluster_stack.start_worker(EVENT_STREAM_SHARDS="3")
    # The old stream is read too: the worker's consumer is in its group (start_worker
    # waited for that on every registered stream; its log line may come a little later).
    probe = sync_redis(cluster_stack.redis_url)
    try:
        assert any(
            name.startswith(f"{worker.consumer}-")
            for name in readiness.group_consumers(probe)[keys.EVENTS]
        )
    finally:
        probe.close()
    new = [register(sim, new_web, f"rs{i % 3}", 400 + i) for i in range(6)]
    for rec in new:
        assert play(new_web, rec.business_id, rec.call_sid).status_code in (200, 202)
    for rec in old + new:
        body = play_until_stored(new_web, rec.business_id, rec.call_sid).content
        assert body == media_bytes(rec)
        assert sim.completed_downloads(rec.recording_sid) == 1
    client = sync_redis(cluster_stack.redis_url)
    # Both layouts were used, and nothing is left pending on either.
    for shard in (*ShardMap(1).current, *ShardMap(3).current):
        assert client.xpending(shard.events, keys.EVENTS_GROUP)["pending"] == 0
    assert client.xlen(keys.EVENTS) >= 6
    assert sum(client.xlen(s.events) for s in ShardMap(3).current) >= 6
    client.close()


async def test_a_drained_old_shard_leaves_the_registry(redis: RedisClient) -> None:
    """Not before its entries are acknowledged and its retries and index are empty."""
    old, new = ShardMap(1), ShardMap(3)
    await shards.register(redis, old)
    await shards.register(redis, new)
    await redis.xgroup_create(keys.EVENTS, keys.EVENTS_GROUP, id="0", mkstream=True)
    await redis.xadd(keys.EVENTS, Event("request", "b", sid(1)).fields())  # type: ignore[arg-type]
    await redis.zadd(keys.DELAYED, {keys.delayed_member("b", sid(2)): 1})
    reading = await shard_upkeep.refresh(redis, new, retire_idle_ms=0)
    assert reading == (*new.current, Shard(None))  # unread entry, retry waiting: kept
    reply = await redis.xreadgroup(keys.EVENTS_GROUP, "w", {keys.EVENTS: ">"})
    assert await shard_upkeep.refresh(redis, new, retire_idle_ms=0) == reading  # pending
    ((entry_id, _fields),) = stream_entries(reply)
    await redis.xack(keys.EVENTS, keys.EVENTS_GROUP, entry_id)
    assert await shard_upkeep.refresh(redis, new, retire_idle_ms=0) == reading  # retry
    await redis.zrem(keys.DELAYED, keys.delayed_member("b", sid(2)))
    # Drained, but written to recently: a web with the old setting may still be running.
    assert await shard_upkeep.refresh(redis, new, retire_idle_ms=60_000) == reading
    assert await shard_upkeep.refresh(redis, new, retire_idle_ms=0) == new.current
    assert await shards.registered(redis, new) == new.current


def test_a_web_started_before_its_redis_serves_once_it_answers(
    tmp_path: Path, sim: Simulator
) -> None:
    """Unreachable at start: /healthz answers, /readyz says not ready; once Redis answers
    the web registers its shards and serves (the mode found then, not assumed)."""
    from callrec.embedded_redis import EmbeddedRedis, free_port
    from tests.stack import wait_for

    port = free_port()
    stack = Stack.around(sim, tmp=tmp_path, redis_url=f"redis://127.0.0.1:{port}/0")
    try:
        web = stack.start_web(EVENT_STREAM_SHARDS="2")
        assert httpx.get(f"{web}/readyz", timeout=10).status_code == 503
        with EmbeddedRedis(port=port) as server:

            def ready() -> bool:
                return httpx.get(f"{web}/readyz", timeout=10).status_code == 200

            wait_for(ready, "the web to find its redis")
            client = sync_redis(server.url)

            def registered() -> bool:
                streams = set(texts(client.smembers(keys.EVENT_STREAMS)))
                return streams == {s.events for s in ShardMap(2).current}

            wait_for(registered, "the web's shards registered")
            client.close()
    finally:
        stack.stop()


async def test_permit_scripts_abort_before_writing_when_their_slot_migrates(
    redis_cluster: EmbeddedCluster, cluster_url: str
) -> None:
    """The account permit scripts find other waiters' keys inside the script (a release
    hands its permit to the next business in the ring). A migration that already moved
    one waiting business's line: each op fails before its first write (a transient
    error, the account exactly as it was); once the migration ends they run."""
    from tenants.permits import AccountPermits

    client = client_for(cluster_url, cluster=True, purpose="worker")
    a = "AC" + "7" * 32

    def permits(proc: str) -> AccountPermits:
        return AccountPermits(
            client, max_per_account=1, proc=proc, poll_s=0.005, proc_ttl_ms=600_000
        )

    holder, waiter, newcomer = permits("p1"), permits("p2"), permits("p3")
    async with holder.hold(a, "b1") as first:
        first.report("throttled")  # the account's AIMD state exists: every KEYS is here
    held = await holder._acquire(a, "b1", False)  # the only permit

    def acquire_keys(proc: str, permit_id: str, b: str) -> list[str]:
        return [
            *keys.permit_proc_keys(a, proc),
            keys.permit_wait(a, b),
            keys.permit_lease(a, permit_id),
        ]

    # Waiters of two businesses, driven by hand (no poller writing meanwhile).
    for permit_id, b in (("p2|1", "b2"), ("p2|2", "b3")):
        queued = await waiter._run(
            "acquire", a, acquire_keys("p2", permit_id, b), permit_id, b, "0", "0"
        )
        assert queued["granted"] is False
    names = [
        *keys.permit_keys(a),
        *(keys.permit_lease(a, i) for i in (held, "p2|1", "p2|2", "p3|1")),
        *(keys.permit_wait(a, b) for b in ("b1", "b2", "b3", "b4")),
        *(k for proc in ("p1", "p2", "p3") for k in keys.permit_proc_keys(a, proc)),
    ]

    async def snapshot() -> dict[str, object]:
        return {n: await client.dump(n) for n in names}

    before = await snapshot()
    assert await client.lrange(keys.RING.format(a=a), 0, -1) == [b"b2", b"b3"]
    release = ("release", a, [keys.permit_lease(a, held)], held, "ok", "", "1000")
    slot = key_slot(keys.PERMITS.format(a=a).encode())
    source = redis_cluster.node_of_slot(slot)
    target = next(n for n in redis_cluster.primary_nodes() if n is not source)
    redis_cluster.begin_migration(slot, target)
    try:
        # The line of the business a release would serve next moves first.
        redis_cluster.migrate_keys(source, target, [keys.permit_wait(a, "b2").encode()])
        # Its KEYS all here, the release runs, and is refused by the server mid-script.
        with pytest.raises(ResponseError) as refused:
            await holder._run(*release)
        assert is_transient(refused.value), str(refused.value)
        # These name a key that does not exist yet (a new waiter's lease, say): refused
        # before running (TRYAGAIN), retried by the client, then given up.
        attempts = [
            waiter._run("poll", a, keys.permit_proc_keys(a, "p2"), "p2"),
            newcomer._run("acquire", a, acquire_keys("p3", "p3|1", "b4"), "p3|1", "b4", "0", "0"),
            waiter._run(
                "cancel", a, [keys.permit_wait(a, "b3"), keys.permit_lease(a, "p2|2")], "p2|2", "b3"
            ),
        ]
        for attempt in attempts:
            with pytest.raises(Exception) as failed:
                await attempt
            assert is_transient(failed.value), str(failed.value)
        assert await snapshot() == before
    finally:
        redis_cluster.finish_migration(slot, source, target)
    assert await snapshot() == before
    released = await holder._run(*release)
    assert released["released"] is True and released["in_use"] == 1
    # The permit went to the waiter at the head of the ring, which finds it in its inbox.
    assert await client.exists(keys.permit_lease(a, "p2|1")) == 1
    polled = await waiter._run("poll", a, keys.permit_proc_keys(a, "p2"), "p2")
    assert polled["granted"] == ["p2|1"]
    assert await client.lrange(keys.RING.format(a=a), 0, -1) == [b"b3"]
    await client.aclose()
