"""callrec on a Redis/Valkey cluster (3 primaries, a replica each): what only a cluster
can do to it. A slot migrating under a script, event streams sharded across primaries,
changing the number of shards on a running deployment."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from callrec.embedded_cluster import EmbeddedCluster
from calls import keys
from calls.redis_client import client_for, is_transient
from calls.shards import ShardMap, shard_tags
from semaphore import Slots


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


__all__ = ["asyncio"]
