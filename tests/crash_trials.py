"""kill -9 of a worker in the middle of its downloads, measured: shared by the default
suite (a few trials, asserted) and ``make chaos`` (many trials, reported).

A trial plays a few slow recordings of one business, waits until their bodies are
streaming, SIGKILLs a worker that is downloading one of them, starts a replacement, and
waits for every recording to be stored. Meanwhile a watcher thread reads the canonical
paths over and over: any file there that is not the complete recording is a torn file.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.flocks import flock_state, lock_path
from tests.helpers import play, register
from tests.stack import Proc, Stack, wait_for
from twilio_sim import SimRecording, Simulator, media_bytes

# Slow enough that a kill lands mid-body; fast enough for many trials.
RECORDING_BYTES = 192 * 1024
CHUNK_BYTES = 16 * 1024
CHUNK_DELAY_S = 0.06
# Short leases so a dead worker's slots come back quickly.
CRASH_ENV = {
    "INFLIGHT_TTL_SECONDS": "2",
    "RECONCILE_INTERVAL_MS": "300",
    "CLAIM_MIN_IDLE_MS": "1000",
    "PREFETCH_ON_WEBHOOK": "false",
}


@dataclass
class Totals:
    trials: int = 0
    requests: int = 0
    lost: int = 0
    duplicated: int = 0  # full bodies fetched again beyond what a kill forced
    asked_again_once_stored: int = 0
    torn: int = 0
    interrupted: int = 0  # downloads the kill cut short
    recovery_s: list[float] = field(default_factory=list)

    def summary(self) -> str:
        worst = max(self.recovery_s, default=0.0)
        return (
            f"trials={self.trials} requests={self.requests} lost={self.lost} "
            f"duplicated={self.duplicated} asked_again_once_stored="
            f"{self.asked_again_once_stored} torn={self.torn} "
            f"interrupted={self.interrupted} max_recovery_s={worst:.2f}"
        )


class TornWatcher(threading.Thread):
    """Reads the canonical files while the trial runs; counts any incomplete view."""

    def __init__(self, paths: dict[Path, bytes]) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.torn = 0
        self.reads = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for path, expected in self.paths.items():
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                self.reads += 1
                if data != expected:
                    self.torn += 1
            time.sleep(0.005)


def start_slow_stack(
    stack: Stack,
    sim: Simulator,
    *,
    env: Mapping[str, str],
    workers: int,
    chunk_bytes: int,
    chunk_delay_s: float,
) -> str:
    """A web and ``workers`` workers under ``env``, with the simulator sending bodies
    in ``chunk_bytes`` every ``chunk_delay_s`` (slow enough for a disturbance to land
    mid-body); returns the web's URL. Shared with tests/cluster_trials.py."""
    stack.env_overrides.update(env)
    web = stack.start_web()
    for _ in range(workers):
        stack.start_worker()
    sim.chunk_size = chunk_bytes
    sim.chunk_delay_s = chunk_delay_s
    return web


def prepare(stack: Stack, sim: Simulator, workers: int = 2) -> str:
    return start_slow_stack(
        stack,
        sim,
        env=CRASH_ENV,
        workers=workers,
        chunk_bytes=CHUNK_BYTES,
        chunk_delay_s=CHUNK_DELAY_S,
    )


def _downloader_of(stack: Stack, rec: SimRecording) -> Proc | None:
    """The worker downloading ``rec``: the one holding its file lock (taken before the
    media request, released once the file is published or dropped)."""
    lock = lock_path(stack.recordings_dir, rec.call_sid)
    try:
        holders = flock_state(lock).holders
    except FileNotFoundError:  # no download of it has begun
        return None
    return next((p for p in stack.workers() if p.alive() and p.popen.pid in holders), None)


def run_trial(
    stack: Stack,
    sim: Simulator,
    web: str,
    totals: Totals,
    *,
    n: int,
    rng: random.Random,
    per_trial: int = 3,
    timeout_s: float = 40.0,
) -> None:
    b = f"crash{n}"
    recs = [
        register(sim, web, b, 10_000 + 10 * n + i, size_bytes=RECORDING_BYTES)
        for i in range(per_trial)
    ]
    paths = {stack.recordings_dir / f"{r.call_sid}.mp3": media_bytes(r) for r in recs}
    watcher = TornWatcher(paths)
    watcher.start()
    try:
        for rec in recs:
            assert play(web, b, rec.call_sid).status_code == 202
        wait_for(lambda: any(sim.downloads(r.recording_sid) for r in recs), "a body to start")
        # Land the kill anywhere in the first part of the bodies.
        time.sleep(rng.uniform(0.0, 0.5))
        streaming = [
            r
            for r in recs
            if sim.downloads(r.recording_sid) and not sim.completed_downloads(r.recording_sid)
        ]
        victim = None
        for rec in streaming or recs:
            victim = _downloader_of(stack, rec)
            if victim is not None:
                break
        if victim is None:
            # Every body ended meanwhile (a slow machine): kill a worker all the same.
            victim = next(p for p in stack.workers() if p.alive())
        held = [r for r in recs if _downloader_of(stack, r) is victim]
        cut_short = [r for r in held if not sim.completed_downloads(r.recording_sid)]
        victim.popen.kill()
        killed_at = time.monotonic()
        victim.popen.wait()
        # A body sent in full but not yet renamed into place when the kill landed may have
        # died with the victim: fetching it once more is recovery, not a duplicate.
        forced_refetch = {
            r.call_sid
            for r in held
            if sim.completed_downloads(r.recording_sid)
            and not (stack.recordings_dir / f"{r.call_sid}.mp3").exists()
        }
        stack.start_worker(wait=False)  # the replacement, as a supervisor would start it
        totals.interrupted += len(cut_short)
        stored_media: dict[str, int] = {}
        deadline = killed_at + timeout_s
        while len(stored_media) < len(recs) and time.monotonic() < deadline:
            for path, rec in zip(paths, recs, strict=True):
                if rec.call_sid not in stored_media and path.exists():
                    stored_media[rec.call_sid] = sim.media_requests(rec.recording_sid)
            time.sleep(0.02)
        totals.recovery_s.append(time.monotonic() - killed_at)
        totals.lost += len(recs) - len(stored_media)
    finally:
        watcher.halt.set()
        watcher.join()
    totals.trials += 1
    totals.requests += len(recs)
    totals.torn += watcher.torn
    for rec in recs:
        allowed = 2 if rec.call_sid in forced_refetch else 1
        totals.duplicated += max(0, sim.completed_downloads(rec.recording_sid) - allowed)
        if rec.call_sid in stored_media:
            after = sim.media_requests(rec.recording_sid) - stored_media[rec.call_sid]
            totals.asked_again_once_stored += after
