"""The file lock between worker processes on this host: a second worker blocked on it
waits, then finds the file the first one stored, and Twilio sees one download
(the scenario: tests/shared_lock.py; across containers: tests/test_shared_volume_containers.py)."""

from __future__ import annotations

import os
import signal
import socket

from tests.helpers import register
from tests.shared_lock import WorkerHandle, register_for, second_worker_waits_then_finds_the_file
from tests.stack import Proc, Stack
from tests.test_metrics_and_logs import scrape, value
from twilio_sim import Simulator


def handle(proc: Proc) -> WorkerHandle:
    pid = proc.popen.pid
    return WorkerHandle(
        name=proc.name,
        pid=pid,
        consumer=f"{socket.gethostname()}-{pid}",  # consumers.__main__.consumer_name()
        pause=lambda: os.kill(pid, signal.SIGSTOP),
        resume=lambda: os.kill(pid, signal.SIGCONT),
    )


def test_a_second_worker_waits_on_the_lock_then_finds_the_file(
    stack: Stack, sim: Simulator
) -> None:
    stack.env_overrides.update(PREFETCH_ON_WEBHOOK="false")
    web = stack.start_web()
    workers = [handle(stack.start_worker()) for _ in range(2)]
    rec = register(sim, web, "lock-b1", 710)
    register_for(sim, web, "lock-b2", rec, stack.redis_url)

    seen = second_worker_waits_then_finds_the_file(
        sim=sim,
        web=web,
        redis_url=stack.redis_url,
        recordings_dir=stack.recordings_dir,
        workers=workers,
        rec=rec,
        b1="lock-b1",
        b2="lock-b2",
    )

    assert seen.holder != seen.waiter
    assert len(seen.during.holders) == 1 and len(seen.during.waiters) == 1
    assert sim.media_requests(rec.recording_sid) == 1
    samples = scrape(web)
    assert value(samples, "callrec_lock_waits_total", outcome="stored") == 1
    assert value(samples, "callrec_lock_waits_total", outcome="missing") == 0
    assert value(samples, "callrec_downloads_total", outcome="ok") == 2  # both slots done
