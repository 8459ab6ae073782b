"""The file lock on a shared recordings directory, contended on purpose and observed:
shared by the process-level test (workers on this host) and the container test (workers
in containers bind-mounting one host directory).

The slots dedupe requests per business, so two downloads of one file at once need two
slot members for it: two businesses that both have the call (files are named by call
SID, slots are per business). Then only the lock stands between them and a second
Twilio download. The scenario:

1. Twilio (the simulator) holds media responses; business ``b1`` plays the call, and the
   worker that takes it is now inside the lock, waiting for the body.
2. That worker is frozen (SIGSTOP, ``docker pause``), and the test waits until Redis
   shows its last read of the stream has expired, so the next request can only go to
   the other worker.
3. Business ``b2`` plays the same call: the other worker gets a slot and blocks on the
   lock; ``/proc/locks`` shows the first as holder, the second as blocked waiter.
4. The first worker resumes and Twilio answers: it stores the file and releases the
   lock; the second finds the file stored, downloads nothing and counts
   ``callrec_lock_waits_total{outcome="stored"}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from calls import keys
from consumers.worker import READ_BLOCK_MS
from tests.flocks import FlockState, consumer_idle_ms, flock_state, lock_path
from tests.helpers import play, play_until_stored
from tests.stack import wait_for
from twilio_sim import SimRecording, Simulator, media_bytes


@dataclass
class WorkerHandle:
    """One worker, wherever it runs: its pid as this host sees it, the ``hostname-pid``
    its consumer name in the group starts with, and how to freeze and thaw it."""

    name: str
    pid: int
    consumer: str
    pause: Callable[[], None]
    resume: Callable[[], None]


@dataclass(frozen=True)
class LockWaitSeen:
    holder: str
    waiter: str
    during: FlockState  # /proc/locks while the waiter was blocked


def register_for(
    sim: Simulator, web: str, business: str, rec: SimRecording, redis_url: str
) -> None:
    """The call and its recording, as ``business``'s webhooks report them, although
    another business registered them first. Since SIDs have owners (issue 10) only data
    from before that can look so; the owner keys are dropped to recreate it, so that two
    workers contend for one file's lock."""
    client = redis.Redis.from_url(redis_url)
    client.delete(keys.owner(rec.call_sid), keys.owner(rec.recording_sid))
    client.close()
    hooks = f"{web}/webhooks/twilio/{business}"
    assert sim.send_call_status(f"{hooks}/call-status", call_sid=rec.call_sid) == 204
    assert sim.send_recording_status(f"{hooks}/recording-status", rec) == 204


def second_worker_waits_then_finds_the_file(
    *,
    sim: Simulator,
    web: str,
    redis_url: str,
    recordings_dir: Path,
    workers: list[WorkerHandle],
    rec: SimRecording,
    b1: str,
    b2: str,
    timeout_s: float = 60.0,
) -> LockWaitSeen:
    lock = lock_path(recordings_dir, rec.call_sid)
    client = redis.Redis.from_url(redis_url)
    sim.hold_media = True
    try:
        assert play(web, b1, rec.call_sid).status_code == 202
        wait_for(lambda: sim.current_concurrent(rec.business_id) == 1, "b1's media request")

        def one_holder() -> bool:
            return lock.exists() and len(flock_state(lock).holders) == 1

        wait_for(one_holder, "a worker to hold the lock", timeout_s)
        [holder_pid] = flock_state(lock).holders
        [holder] = [w for w in workers if w.pid == holder_pid]
        [other] = [w for w in workers if w is not holder]
        holder.pause()
        try:

            def holder_stopped_reading() -> bool:
                idle_ms = consumer_idle_ms(client, holder.consumer)
                return idle_ms is not None and idle_ms > 2 * READ_BLOCK_MS

            wait_for(holder_stopped_reading, "the frozen worker's last read to expire", timeout_s)
            assert play(web, b2, rec.call_sid).status_code == 202
            wait_for(
                lambda: other.pid in flock_state(lock).waiters,
                "the other worker to block on the lock",
                timeout_s,
            )
            during = flock_state(lock)
        finally:
            holder.resume()
        sim.hold_media = False
        for business in (b1, b2):
            answer = play_until_stored(web, business, rec.call_sid, timeout_s)
            assert answer.content == media_bytes(rec)
    finally:
        sim.hold_media = False
        client.close()
    return LockWaitSeen(holder=holder.name, waiter=other.name, during=during)
