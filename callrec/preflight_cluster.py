"""``callrec check``'s rows for a Redis Cluster / Valkey cluster, read from the node
``REDIS_URL`` names (``CLUSTER INFO``, ``CLUSTER NODES``): the cluster's state, every
slot served, a replica behind each primary, and how the ``EVENT_STREAM_SHARDS`` work
streams (calls/shards.py) fall on the primaries.

Each row is a :class:`~callrec.preflight.Check`; a cluster that cannot serve every
business FAILs, one that works but is fragile or unbalanced warns.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from callrec.checks import Check
from calls.shards import ShardMap


@dataclass(frozen=True, slots=True)
class Primary:
    address: str
    node_id: str
    slots: tuple[tuple[int, int], ...]  # inclusive ranges

    def serves(self, slot: int) -> bool:
        return any(start <= slot <= end for start, end in self.slots)


@dataclass(frozen=True, slots=True)
class Layout:
    """What the node knows of the cluster."""

    info: dict[str, str]
    primaries: tuple[Primary, ...]
    replicas_of: dict[str, int]  # primary node id -> replicas connected and not failing


def read_layout(client: redis.Redis) -> Layout:
    info = {str(k): str(v) for k, v in client.cluster("info").items()}
    nodes: dict[str, dict[str, Any]] = client.cluster("nodes")
    primaries = []
    replicas_of: Counter[str] = Counter()
    for address, node in nodes.items():
        flags = set(str(node["flags"]).split(","))
        failing = bool(flags & {"fail", "fail?", "handshake", "noaddr"})
        if "master" in flags and not failing:
            ranges = tuple(_slot_range(r) for r in node["slots"])
            if ranges:  # a primary without slots serves nobody (an empty spare)
                primaries.append(Primary(address, str(node["node_id"]), ranges))
        elif "slave" in flags and not failing and node.get("connected"):
            replicas_of[str(node["master_id"])] += 1
    primaries.sort(key=lambda p: p.slots[0])
    return Layout(info, tuple(primaries), dict(replicas_of))


def _slot_range(raw: list[str]) -> tuple[int, int]:
    start = int(raw[0])
    return start, int(raw[-1])


def cluster_checks(client: redis.Redis, shards: int) -> list[Check]:
    layout = read_layout(client)
    return [
        state_check(layout),
        slots_check(layout),
        replicas_check(layout),
        shards_check(layout, shards),
    ]


def state_check(layout: Layout) -> Check:
    state = layout.info.get("cluster_state", "?")
    primaries = len(layout.primaries)
    if state != "ok":
        return Check(
            "redis cluster",
            "FAIL",
            f"cluster_state {state} ({primaries} primaries): commands are refused "
            "(CLUSTERDOWN) until the cluster reports ok",
        )
    return Check("redis cluster", "ok", f"cluster mode, state ok, {primaries} primaries")


def slots_check(layout: Layout) -> Check:
    served = sum(end - start + 1 for p in layout.primaries for start, end in p.slots)
    failing = int(layout.info.get("cluster_slots_fail", 0))
    if served < REDIS_CLUSTER_HASH_SLOTS or failing:
        missing = REDIS_CLUSTER_HASH_SLOTS - served
        return Check(
            "redis cluster slots",
            "FAIL",
            f"{missing} of {REDIS_CLUSTER_HASH_SLOTS} slots have no live primary, "
            f"{failing} failing: the businesses hashed there cannot be served",
        )
    return Check("redis cluster slots", "ok", f"all {REDIS_CLUSTER_HASH_SLOTS} served")


def replicas_check(layout: Layout) -> Check:
    alone = [p.address for p in layout.primaries if layout.replicas_of.get(p.node_id, 0) < 1]
    if alone:
        return Check(
            "redis cluster replicas",
            "warn",
            f"no replica behind {', '.join(alone)}: losing it stops the businesses on "
            "its slots until it is back (nothing takes over)",
        )
    total = sum(layout.replicas_of.get(p.node_id, 0) for p in layout.primaries)
    return Check("redis cluster replicas", "ok", f"every primary has one ({total} replicas)")


def shards_check(layout: Layout, shards: int) -> Check:
    """The work streams per primary: a primary with more streams carries more of the
    workers' reads and writes, one with none carries none."""
    name = "redis event stream shards"
    primaries = layout.primaries
    if not primaries:
        return Check(name, "FAIL", "no primary serves any slot")
    per_primary = Counter[str]({p.address: 0 for p in primaries})
    for shard in ShardMap(shards).current:
        slot = key_slot(shard.events.encode())
        owner = next((p for p in primaries if p.serves(slot)), None)
        if owner is not None:
            per_primary[owner.address] += 1
    spread = "/".join(str(per_primary[p.address]) for p in primaries)
    where = f"EVENT_STREAM_SHARDS={shards} over {len(primaries)} primaries: {spread}"
    if shards < len(primaries):
        return Check(
            name,
            "warn",
            f"{where}: every event goes through the primaries holding a stream; "
            f"set EVENT_STREAM_SHARDS to {len(primaries)} (or a multiple)",
        )
    if max(per_primary.values()) != min(per_primary.values()):
        return Check(
            name,
            "warn",
            f"{where}: uneven, the busiest primary carries more of the work; "
            f"use a multiple of {len(primaries)} (or reshard the slots)",
        )
    return Check(name, "ok", where)
