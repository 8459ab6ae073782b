"""storage.locks: flock-based per-call locks, tested across real processes.

Ordering is observed through an append-only event log the processes write to, and a
blocked waiter is recognised in /proc/locks (a "->" line on the lock file's inode), so
no assertion depends on how long anything took.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage.locks import file_lock, is_locked

ROOT = Path(__file__).resolve().parents[1]

# argv: lock_path log_path name release_when
#   release_when: a path whose appearance releases the lock, or "never" (hold until killed)
LOCKER = """
import asyncio, os, sys
from pathlib import Path
from storage.locks import file_lock

lock, log, name, release_when = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]

def note(event):
    with open(log, "a") as f:
        f.write(f"{name}:{event}\\n")

async def main():
    note("waiting")
    async with file_lock(lock):
        note("acquired")
        while release_when == "never" or not Path(release_when).exists():
            await asyncio.sleep(0.01)
        note("releasing")

asyncio.run(main())
"""


def spawn_locker(lock: Path, log: Path, name: str, release_when: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(lock), str(log), name, release_when], env=env
    )


def events(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


async def async_wait_until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def has_blocked_waiter(lock: Path) -> bool:
    inode = os.stat(lock).st_ino
    with open("/proc/locks") as f:
        return any("->" in line and f":{inode} " in line for line in f)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_second_process_blocks_until_first_releases(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    lock, log, go = tmp_path / "locks" / "x.lock", tmp_path / "events.log", tmp_path / "go"
    a = spawn_locker(lock, log, "A", str(go))
    procs.append(a)
    wait_until(lambda: "A:acquired" in events(log), "A to acquire")
    assert is_locked(lock)

    procs.append(b := spawn_locker(lock, log, "B", "never"))
    wait_until(lambda: has_blocked_waiter(lock), "B to block in flock")
    assert "B:acquired" not in events(log)

    go.touch()
    assert a.wait(timeout=30) == 0
    wait_until(lambda: "B:acquired" in events(log), "B to acquire after A released")
    b.kill()
    b.wait()

    log_events = events(log)
    assert log_events.index("A:releasing") < log_events.index("B:acquired")
    assert log_events.index("B:waiting") < log_events.index("A:releasing")


def test_sigkilled_holder_releases_the_lock(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    lock, log = tmp_path / "x.lock", tmp_path / "events.log"
    procs.append(a := spawn_locker(lock, log, "A", "never"))
    wait_until(lambda: "A:acquired" in events(log), "A to acquire")
    procs.append(spawn_locker(lock, log, "B", "never"))
    wait_until(lambda: has_blocked_waiter(lock), "B to block in flock")

    a.send_signal(signal.SIGKILL)
    assert a.wait(timeout=30) == -signal.SIGKILL
    wait_until(lambda: "B:acquired" in events(log), "B to acquire after A died")
    assert "A:releasing" not in events(log)  # A never let go by itself: the kernel did


async def test_event_loop_keeps_running_while_waiting(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    # A separate open file description conflicts with file_lock even in-process.
    holder = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    acquired = asyncio.Event()

    async def waiter() -> None:
        async with file_lock(lock):
            acquired.set()

    task = asyncio.create_task(waiter())
    ticks = 0
    while not has_blocked_waiter(lock) or ticks < 20:
        await asyncio.sleep(0.005)
        ticks += 1
    # The loop ticked while the waiter sat in flock, and the waiter did not get in.
    assert not acquired.is_set()
    assert not task.done()

    fcntl.flock(holder, fcntl.LOCK_UN)
    os.close(holder)
    await asyncio.wait_for(task, 30)
    assert acquired.is_set()


async def test_cancelled_waiter_does_not_keep_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    holder = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)

    async def waiter() -> None:
        async with file_lock(lock):
            raise AssertionError("a cancelled waiter must never enter the block")

    task = asyncio.create_task(waiter())
    await async_wait_until(lambda: has_blocked_waiter(lock), "the waiter to block in flock")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    fcntl.flock(holder, fcntl.LOCK_UN)
    os.close(holder)
    # The abandoned thread gets the lock and must hand it straight back.
    async with asyncio.timeout(30):
        async with file_lock(lock):
            assert is_locked(lock)
    assert not is_locked(lock)


async def test_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with pytest.raises(RuntimeError, match="boom"):
        async with file_lock(lock):
            assert is_locked(lock)
            raise RuntimeError("boom")
    assert not is_locked(lock)


async def test_coroutines_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    order: list[str] = []

    async def worker(name: str) -> None:
        async with file_lock(lock):
            order.append(f"{name}-in")
            await asyncio.sleep(0.01)
            order.append(f"{name}-out")

    await asyncio.gather(*(worker(str(i)) for i in range(4)))
    # Entries and exits strictly alternate: nobody entered while someone was inside.
    assert [e.split("-")[1] for e in order] == ["in", "out"] * 4
    assert not is_locked(lock)


async def test_file_lock_says_whether_another_holder_made_it_wait(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    async with file_lock(lock) as waited:
        assert waited is False  # nobody held it
    holder = os.open(lock, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)

    async def waiter() -> bool:
        async with file_lock(lock) as waited:
            return waited

    task = asyncio.create_task(waiter())
    await async_wait_until(lambda: has_blocked_waiter(lock), "the waiter to block")
    fcntl.flock(holder, fcntl.LOCK_UN)
    os.close(holder)
    assert await asyncio.wait_for(task, 30) is True
