"""Pods sharing a recordings volume, as the shared-volume overlay deploys them: one web
and two worker containers run what deploy/kubernetes says (tests/pod_containers.py) and
bind-mount one host directory as RECORDINGS_DIR with STORAGE=disk.

- Concurrent plays of the same recordings through the web: one Twilio download each.
- The file lock contended across containers, seen in the kernel's lock table and in
  callrec's own counter: a second worker blocked on the lock, then found the file.
- A worker container killed mid-download (``docker kill``): no torn file, no stuck slot,
  the other worker finishes it.
- Throughout, a watcher reads every ``<call_sid>.mp3``: any view that is not the whole
  recording is a torn file.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from calls import keys
from storage.staging import PART_SUFFIX
from tests.crash_trials import TornWatcher
from tests.flocks import FlockState, flock_state, lock_path
from tests.helpers import click_together, play, play_until_stored, register
from tests.images import Images
from tests.kube import Rendered, render_overlay
from tests.pod_containers import WEB, WORKER, Pod, Pods
from tests.shared_lock import (
    WorkerHandle,
    register_for,
    second_worker_waits_then_finds_the_file,
)
from tests.stack import JWT_SECRET, wait_for
from tests.test_metrics_and_logs import scrape, value
from twilio_sim import SimRecording, Simulator, media_bytes

pytestmark = pytest.mark.containers

B1, B2 = "shv-b1", "shv-b2"
CLICKS = 6  # simultaneous plays of one recording by one business
RECORDING_BYTES = 256 * 1024
# Leases long enough to outlast the few seconds a worker is frozen in the lock scenario,
# short enough that a killed worker's slot comes back quickly.
TEST_ENV = {
    "INFLIGHT_TTL_SECONDS": "8",
    "RECONCILE_INTERVAL_MS": "300",
    "CLAIM_MIN_IDLE_MS": "1000",
    "DOWNLOAD_BACKOFF_BASE_MS": "100",
    "PREFETCH_ON_WEBHOOK": "false",
}


@pytest.fixture
def pods(images: Images, tmp_path: Path, sim: Simulator, redis_url: str) -> Iterator[Pods]:
    overlay = Rendered(render_overlay("shared-volume"))
    shared = tmp_path / "recordings"
    shared.mkdir()
    security = overlay.pod_spec(WORKER)["securityContext"]
    # What fsGroup does for the volume in Kubernetes.
    os.chown(shared, security["runAsUser"], security["fsGroup"])
    address = redis_url.split("//", 1)[1].split("/", 1)[0]
    secrets = {
        "REDIS_URL": redis_url,
        "REDIS_ADDRESS": address,
        "CALLREC_JWT_SECRET": JWT_SECRET,
        "TWILIO_ACCOUNT_SID": sim.account_sid,
        "TWILIO_AUTH_TOKEN": sim.auth_token,
    }
    running = Pods(images, overlay, shared, secrets)
    try:
        yield running
    finally:
        running.stop_all()


def handle(pod: Pod) -> WorkerHandle:
    return WorkerHandle(pod.name, pod.pid, pod.consumer, pod.pause, pod.unpause)


def lock_states(shared: Path, recs: list[SimRecording]) -> list[FlockState]:
    paths = [lock_path(shared, r.call_sid) for r in recs]
    return [flock_state(p) if p.exists() else FlockState(frozenset(), frozenset()) for p in paths]


def test_pods_sharing_a_volume_download_once_lock_across_containers_and_survive_a_kill(
    pods: Pods, sim: Simulator, redis_url: str
) -> None:
    env = {**TEST_ENV, "TWILIO_API_BASE": sim.base_url}
    web = pods.web(**env)
    workers = [pods.worker(redis_url, **env) for _ in range(2)]
    # The operator's preflight, as deploy/README.md says to run it in a web pod: the
    # volume is writable by the pods' user on a read-only root, and said to be shared.
    status, output = pods.exec_like(WEB, ["python", "-m", "callrec", "check"], **env)
    assert status == 0, output
    assert re.search(r"^storage shared.*\bok\b", output, re.M), output
    by_pid = {w.pid: w.name for w in workers}
    shared = pods.recordings_dir
    client = redis.Redis.from_url(redis_url)

    together = [register(sim, web.url, B1, 900 + i, size_bytes=RECORDING_BYTES) for i in range(3)]
    contended = register(sim, web.url, B1, 910, size_bytes=RECORDING_BYTES)
    killed = register(sim, web.url, B1, 920, size_bytes=2 * RECORDING_BYTES)
    for rec in [*together, contended]:
        register_for(sim, web.url, B2, rec, redis_url)  # both businesses have these calls
    every = [*together, contended, killed]
    watcher = TornWatcher({shared / f"{r.call_sid}.mp3": media_bytes(r) for r in every})
    watcher.start()
    try:
        # 1. Simultaneous plays of three recordings by both businesses, while Twilio
        # holds its answers: each business gets a slot per recording (3 = its cap), so
        # for each recording one worker holds the file lock and another waits on it.
        sim.hold_media = True
        statuses = [
            status
            for rec in together
            for business in (B1, B2)
            for status in click_together([web.url], business, rec.call_sid, CLICKS)
        ]
        assert set(statuses) == {202}

        def each_contended() -> bool:
            return all(
                len(s.holders) == 1 and len(s.waiters) == 1 for s in lock_states(shared, together)
            )

        wait_for(each_contended, "a holder and a waiter on each recording's lock", 60)
        pairs = [
            (next(iter(s.holders)), next(iter(s.waiters))) for s in lock_states(shared, together)
        ]
        assert {pid for pair in pairs for pid in pair} <= set(by_pid), (pairs, by_pid)
        across_containers = sum(1 for holder, waiter in pairs if holder != waiter)
        sim.hold_media = False
        for rec in together:
            for business in (B1, B2):
                assert play_until_stored(web.url, business, rec.call_sid).content == media_bytes(
                    rec
                )
        assert [sim.media_requests(r.recording_sid) for r in together] == [1, 1, 1]
        assert sim.max_concurrent(B1) <= 3
        # Each waiter found the file its holder stored.
        assert value(scrape(web.url), "callrec_lock_waits_total", outcome="stored") == 3

        # 2. One more, made to cross containers: the lock holder is frozen, so the other
        # worker takes the second business's request and blocks on the lock.
        seen = second_worker_waits_then_finds_the_file(
            sim=sim,
            web=web.url,
            redis_url=redis_url,
            recordings_dir=shared,
            workers=[handle(w) for w in workers],
            rec=contended,
            b1=B1,
            b2=B2,
        )
        assert seen.holder != seen.waiter
        assert sim.media_requests(contended.recording_sid) == 1
        samples = scrape(web.url)  # the one more is the waiter in the other container
        assert value(samples, "callrec_lock_waits_total", outcome="stored") == 4
        assert value(samples, "callrec_lock_waits_total", outcome="missing") == 0

        # 3. docker kill of the worker streaming a body into the shared directory.
        sim.chunk_size = 16 * 1024
        sim.chunk_delay_s = 0.1  # 32 chunks: about 3 s of body
        assert play(web.url, B1, killed.call_sid).status_code == 202

        def mid_body() -> bool:
            staging = list(shared.glob(f".{killed.call_sid}.*{PART_SUFFIX}"))
            started = sim.downloads(killed.recording_sid) == 1
            return bool(staging) and started and sim.completed_downloads(killed.recording_sid) == 0

        wait_for(mid_body, "the body to stream into a staging file", 60)
        [victim_pid] = flock_state(lock_path(shared, killed.call_sid)).holders
        [victim] = [w for w in workers if w.pid == victim_pid]
        [survivor] = [w for w in workers if w is not victim]
        victim.kill()
        killed_at = time.monotonic()
        assert sim.completed_downloads(killed.recording_sid) == 0, "the kill came too late"
        sim.chunk_delay_s = 0.0  # so the recovery time is the repair's, not the body's
        stored = play_until_stored(web.url, B1, killed.call_sid, timeout_s=60)
        recovery_s = time.monotonic() - killed_at
        assert stored.content == media_bytes(killed)
        assert sim.completed_downloads(killed.recording_sid) == 1
        assert sim.media_requests(killed.recording_sid) == 2  # the one cut short, and the redo

        def nothing_stuck() -> bool:
            held = sum(client.scard(keys.slots(b)) for b in (B1, B2))
            leases = list(client.scan_iter(match="rec_inflight:*"))
            queued = sum(client.llen(keys.queue(b)) for b in (B1, B2))
            pending = client.xpending(keys.EVENTS, keys.EVENTS_GROUP)["pending"]
            return held == 0 and not leases and queued == 0 and pending == 0

        wait_for(nothing_stuck, "no slot, lease, queue entry or stream entry left", 60)
        assert survivor.running()
    finally:
        sim.hold_media = False
        watcher.halt.set()
        watcher.join()
        client.close()

    # Files only ever complete under <call_sid>.mp3, and nothing else visible.
    assert watcher.torn == 0 and watcher.reads > 0
    visible = sorted(p.name for p in shared.iterdir() if not p.name.startswith("."))
    assert visible == sorted(f"{r.call_sid}.mp3" for r in every)
    for rec in every:
        assert (shared / f"{rec.call_sid}.mp3").read_bytes() == media_bytes(rec)
    # The killed writer's staging file, hidden and never served, is what the next
    # worker start sweeps (storage/disk.py); nobody holds its lock any more.
    orphans = [p.name for p in shared.glob(f".*{PART_SUFFIX}")]
    assert len(orphans) <= 1 and all(killed.call_sid in name for name in orphans)
    assert flock_state(lock_path(shared, killed.call_sid)).holders == frozenset()

    found = value(samples, "callrec_lock_waits_total", outcome="stored")
    lease_s = TEST_ENV["INFLIGHT_TTL_SECONDS"]
    print(
        f"\nshared volume: simultaneous plays={len(statuses)} (3 recordings x 2 businesses x "
        f"{CLICKS}), media requests per recording="
        f"{[sim.media_requests(r.recording_sid) for r in every]} (the last one killed), "
        f"lock waits that found the file={found:.0f} (holder and waiter in /proc/locks: "
        f"{len(pairs) + 1}, of them across containers: {across_containers + 1}), "
        f"torn views={watcher.torn} of {watcher.reads} reads, stored {recovery_s:.2f} s "
        f"after docker kill (lease {lease_s} s), orphaned staging files={len(orphans)}"
    )
