"""Per-call exclusive locks shared by every process on the host.

flock, not lockf/fcntl record locks: a flock belongs to the open file description, so
it is released exactly when we close our descriptor or the process dies (even by
SIGKILL), while a POSIX record lock vanishes when *any* descriptor of the file in the
process is closed, e.g. by an unrelated library opening and closing the same path.
Two descriptors opened separately conflict even inside one process, so coroutines of
one process exclude each other too.

Lock files are never deleted: unlinking one while another process waits on it would
let that waiter lock an orphaned inode while a third process locks a fresh file.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def _open_lock_file(lock_path: Path) -> int:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


async def _open_off_loop(lock_path: Path) -> int:
    opening = asyncio.ensure_future(asyncio.to_thread(_open_lock_file, lock_path))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        # The open still completes in its thread; close what it returns so cancelled
        # waiters do not leak descriptors in a long-running worker.
        opening.add_done_callback(
            lambda done: None if done.cancelled() or done.exception() else os.close(done.result())
        )
        raise


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _release(fd: int) -> None:
    # Closing alone would release it, but not if a forked child inherited the
    # descriptor; the explicit unlock covers that.
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


async def _wait_for_flock(fd: int, lock_path: Path) -> None:
    """Block in a dedicated thread until the lock is ours; the loop keeps running.

    A dedicated daemon thread rather than the default executor: a waiter may block for
    as long as a download takes, and a pool full of waiters would starve the holder's
    own to_thread writes (a deadlock) and hold up interpreter exit.

    Takes ownership of ``fd``: on failure or cancellation it is closed here or by the
    thread once its flock call returns.
    """
    loop = asyncio.get_running_loop()
    granted: asyncio.Future[None] = loop.create_future()

    def deliver(error: BaseException | None) -> None:
        # Runs on the loop, so it cannot race with the waiter's cancellation.
        if granted.cancelled():
            if error is None:
                _release(fd)  # the waiter gave up while we were blocked: let go at once
            else:
                os.close(fd)
        elif error is None:
            granted.set_result(None)
        else:
            os.close(fd)
            granted.set_exception(error)

    def block() -> None:
        error: BaseException | None = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException as exc:
            error = exc
        try:
            loop.call_soon_threadsafe(deliver, error)
        except RuntimeError:
            os.close(fd)  # the loop is gone; nobody will ever use this lock

    threading.Thread(target=block, name=f"flock-wait {lock_path.name}", daemon=True).start()
    await granted


@asynccontextmanager
async def file_lock(lock_path: Path) -> AsyncIterator[bool]:
    """Hold an exclusive flock on ``lock_path`` (created if needed) for the block; yields
    whether another holder made us wait for it."""
    fd = await _open_off_loop(lock_path)
    # LOCK_NB never blocks, so the uncontended case costs no thread.
    waited = not _try_flock(fd)
    if waited:
        log.debug("waiting for lock %s", lock_path)
        await _wait_for_flock(fd, lock_path)
    try:
        yield waited
    finally:
        _release(fd)


def is_locked(lock_path: Path) -> bool:
    """Whether someone holds the lock right now (a snapshot). No file means nobody."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if _try_flock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)
