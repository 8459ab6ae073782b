"""Chaos on a cluster, measured: a web and two workers download slow recordings of a few
businesses while the cluster changes under them (a primary killed and failed over, or a
busy business's slot migrated key by key). Shared by the default suite (one trial each,
asserted) and ``make chaos`` (more trials, reported).

Figures per trial:

- ``lost``: accepted requests (202) whose file is never stored;
- ``max_concurrent``: the most bodies the simulator streamed at once for one business
  over the whole trial (exact, counted by the simulator);
- ``max_concurrent_outside_window``: the same, sampled, leaving out the failover window
  (from the kill until one lease time after the cluster is healthy again: what
  asynchronous replication can cost, deploy/README.md);
- ``max_dead_member_s``: the longest a SID stayed in a ``rec_slots`` set with its lease
  gone (a slot held by nobody), which must stay under ``INFLIGHT_TTL_SECONDS``;
- ``max_lease_ms``: the largest lease TTL seen (never above the configured lease).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from callrec.embedded_cluster import EmbeddedCluster
from calls import keys
from calls.redis_values import text_map, texts
from calls.shards import ShardMap
from tests.crash_trials import start_slow_stack
from tests.helpers import play, register
from tests.stack import Stack, wait_for
from twilio_sim import SimRecording, Simulator, media_bytes

LEASE_S = 3
CLUSTER_ENV = {
    "INFLIGHT_TTL_SECONDS": str(LEASE_S),
    "RECONCILE_INTERVAL_MS": "300",
    "CLAIM_MIN_IDLE_MS": "1000",
    "PREFETCH_ON_WEBHOOK": "false",
    "EVENT_STREAM_SHARDS": "3",
}
RECORDING_BYTES = 160 * 1024
CHUNK_BYTES = 16 * 1024
CHUNK_DELAY_S = 0.08  # about 0.8 s a body: several generations of slots per trial
BUSINESSES = 4
PER_BUSINESS = 8
MAX_SLOTS = 3


@dataclass
class Figures:
    trials: int = 0
    requests: int = 0
    lost: int = 0
    max_concurrent: int = 0
    max_concurrent_outside_window: int = 0
    max_dead_member_s: float = 0.0
    max_lease_ms: int = 0
    windows_s: list[float] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"trials={self.trials} requests={self.requests} lost={self.lost} "
            f"max_concurrent={self.max_concurrent} "
            f"max_concurrent_outside_window={self.max_concurrent_outside_window} "
            f"max_dead_member_s={self.max_dead_member_s:.2f} max_lease_ms={self.max_lease_ms} "
            f"max_window_s={max(self.windows_s, default=0.0):.2f}"
        )


class Sampler(threading.Thread):
    """Watches the slot sets, their leases and the simulator's concurrency."""

    def __init__(self, url: str, sim: Simulator, businesses: list[str]) -> None:
        super().__init__(daemon=True)
        self.client = RedisCluster.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self.sim = sim
        self.businesses = businesses
        self.halt = threading.Event()
        self.window = threading.Event()  # set while the failover window is open
        self.dead_since: dict[tuple[str, str], float] = {}
        self.max_dead_s = 0.0
        self.max_lease_ms = 0
        self.max_outside = 0

    def run(self) -> None:
        while not self.halt.is_set():
            now = time.monotonic()
            for b in self.businesses:
                concurrent = self.sim.current_concurrent(b)
                if not self.window.is_set():
                    self.max_outside = max(self.max_outside, concurrent)
                try:
                    members = texts(self.client.smembers(keys.slots(b)))
                    ttls = [self.client.pttl(keys.inflight(b, m)) for m in members]
                except (redis.RedisError, OSError):
                    continue  # the cluster is failing over: look again
                for m, ttl in zip(members, ttls, strict=True):
                    key = (b, m)
                    self.max_lease_ms = max(self.max_lease_ms, ttl)
                    if ttl < 0:
                        self.dead_since.setdefault(key, now)
                        self.max_dead_s = max(self.max_dead_s, now - self.dead_since[key])
                    else:
                        self.dead_since.pop(key, None)
                for key in [k for k in self.dead_since if k[0] == b]:
                    if key[1] not in members:
                        self.dead_since.pop(key)
            time.sleep(0.02)
        self.client.close()


def prepare(stack: Stack, sim: Simulator, workers: int = 2) -> str:
    return start_slow_stack(
        stack,
        sim,
        env=CLUSTER_ENV,
        workers=workers,
        chunk_bytes=CHUNK_BYTES,
        chunk_delay_s=CHUNK_DELAY_S,
    )


Disturb = Callable[[list[str], Sampler], None]


def run_trial(
    stack: Stack,
    sim: Simulator,
    web: str,
    figures: Figures,
    disturb: Disturb,
    *,
    n: int,
    timeout_s: float = 90.0,
) -> None:
    """Play every recording, ``disturb`` the cluster once bodies stream, wait for all."""
    businesses = [f"cl{n}-{i}" for i in range(BUSINESSES)]
    recs: list[SimRecording] = []
    for i, b in enumerate(businesses):
        for j in range(PER_BUSINESS):
            recs.append(
                register(sim, web, b, 20_000 + 1000 * n + 100 * i + j, size_bytes=RECORDING_BYTES)
            )
    sampler = Sampler(stack.redis_url, sim, businesses)
    sampler.start()
    try:
        for rec in recs:
            assert play(web, rec.business_id, rec.call_sid).status_code == 202
        wait_for(lambda: any(sim.downloads(r.recording_sid) for r in recs), "bodies to stream")
        disturb(businesses, sampler)
        paths = {rec.call_sid: stack.recordings_dir / f"{rec.call_sid}.mp3" for rec in recs}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not all(p.exists() for p in paths.values()):
            time.sleep(0.05)
        stored = [rec for rec in recs if _complete(paths[rec.call_sid], rec)]
        if len(stored) < len(recs):
            lost = [r for r in recs if r not in stored]
            print(_state_of_lost(stack.redis_url, lost), flush=True)
    finally:
        sampler.halt.set()
        sampler.join()
    figures.trials += 1
    figures.requests += len(recs)
    figures.lost += len(recs) - len(stored)
    figures.max_concurrent = max(
        [figures.max_concurrent, *(sim.max_concurrent(b) for b in businesses)]
    )
    figures.max_concurrent_outside_window = max(
        figures.max_concurrent_outside_window, sampler.max_outside
    )
    figures.max_dead_member_s = max(figures.max_dead_member_s, sampler.max_dead_s)
    figures.max_lease_ms = max(figures.max_lease_ms, sampler.max_lease_ms)


def _state_of_lost(url: str, lost: list[SimRecording]) -> str:
    """What Redis holds for requests never served: the failure message's evidence."""
    shard_map = ShardMap(int(CLUSTER_ENV["EVENT_STREAM_SHARDS"]))
    client = RedisCluster.from_url(url, decode_responses=True)
    lines = []
    try:
        for b in sorted({r.business_id for r in lost}):
            shard = shard_map.of(b)
            lines.append(
                f"LOST business={b} queue={client.lrange(keys.queue(b), 0, -1)} "
                f"queued={client.smembers(keys.queued(b))} slots={client.smembers(keys.slots(b))} "
                f"pending={client.smembers(keys.pending(b))} "
                f"live={client.hget(shard.live, b)!r} delayed={client.zrange(shard.delayed, 0, -1)}"
            )
        for r in lost:
            lines.append(
                f"LOST call={r.call_sid} business={r.business_id} "
                f"{text_map(client.hgetall(keys.call(r.business_id, r.call_sid)))}"
            )
        for shard in shard_map.current:
            pending = client.xpending(shard.events, keys.EVENTS_GROUP)
            lines.append(f"LOST stream={shard.events} pending={pending}")
    finally:
        client.close()
    return "\n".join(lines)


def _complete(path: Path, rec: SimRecording) -> bool:
    return path.exists() and path.read_bytes() == media_bytes(rec)


def failover(cluster: EmbeddedCluster, figures: Figures) -> Disturb:
    """kill -9 the primary holding the first business's slot; its replica takes over."""

    def disturb(businesses: list[str], sampler: Sampler) -> None:
        from redis.crc import key_slot

        slot = key_slot(keys.slots(businesses[0]).encode())
        victim = cluster.node_of_slot(slot)
        sampler.window.set()
        started = time.monotonic()
        victim.stop(kill=True)
        wait_for(lambda: _served_by_other(cluster, slot, victim.port), "replica takes over", 30)
        # The window: until one lease after the new primary serves the slot, a lease
        # whose write the dead primary had not replicated may let one more download in.
        time.sleep(LEASE_S)
        figures.windows_s.append(time.monotonic() - started)
        sampler.window.clear()
        # Back as a replica of the new primary (its nodes.conf remembers the cluster).
        victim.start()

    return disturb


def _served_by_other(cluster: EmbeddedCluster, slot: int, dead_port: int) -> bool:
    try:
        return cluster.node_of_slot(slot).port != dead_port
    except (redis.RedisError, OSError):
        return False


def migration(cluster: EmbeddedCluster, pause_s: float = 0.05) -> Disturb:
    """Move the busiest business's slot to another primary, key by key, mid-run."""

    def disturb(businesses: list[str], sampler: Sampler) -> None:
        from redis.crc import key_slot

        slot = key_slot(keys.slots(businesses[0]).encode())
        source = cluster.node_of_slot(slot)
        target = next(n for n in cluster.primary_nodes() if n is not source)
        cluster.begin_migration(slot, target)
        try:
            for key in cluster.keys_in_slot(source, slot):
                cluster.migrate_keys(source, target, [key])
                time.sleep(pause_s)
        finally:
            cluster.finish_migration(slot, source, target)

    return disturb
