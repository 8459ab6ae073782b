"""The local disk in front of object storage: a :class:`DiskStore` bounded by bytes.

Least recently used files go first. "Used" is tracked in each file's atime, set
explicitly on every hit (``os.utime``), because mount options (``noatime``,
``relatime``) make the kernel's own atime useless for this. The mtime is left alone: it
is part of the ETag.

Never evicted, across every process sharing the directory:

- a file being written: its call's lock (``storage.locks``) is held from before the
  staging file exists until the upload and the rename are done;
- a file being served: the server holds a shared ``flock`` on the file itself (a
  :class:`Pin`) for the whole response; the evictor needs an exclusive non-blocking
  ``flock`` on it before it unlinks.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from storage.base import CALL_SID_RE, StoredRecording
from storage.disk import DiskStore, recording_from_stat
from storage.locks import is_locked

log = logging.getLogger(__name__)

SUFFIX = ".mp3"


@dataclass(frozen=True, slots=True)
class _Entry:
    sid: str
    path: Path
    size: int
    used_ns: int


class Pin:
    """A shared flock on one cached file; the evictor skips the file while it is held."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        # Closing the descriptor drops the lock; no I/O worth a thread hop.
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _pin_sync(path: Path) -> Pin | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        # The evictor may have unlinked it between our open and our lock.
        if os.fstat(fd).st_nlink == 0:
            os.close(fd)
            return None
    except BlockingIOError:
        os.close(fd)  # being evicted right now: a miss
        return None
    except BaseException:
        os.close(fd)
        raise
    return Pin(fd)


def _lookup_sync(path: Path) -> os.stat_result | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    try:
        os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))
    except FileNotFoundError:
        return None  # evicted in between
    except OSError as exc:
        # A web process running as another user may not set times on the worker's
        # files; the hit still counts, only the LRU order gets coarser.
        log.debug("cannot mark %s as used: %s", path, exc)
    return st


class DiskCache:
    def __init__(self, disk: DiskStore, max_bytes: int | None) -> None:
        self.disk = disk
        self.max_bytes = max_bytes

    async def lookup(self, call_sid: str) -> StoredRecording | None:
        """The cached copy, marked as just used; None on a miss."""
        path = self.disk.path_for(call_sid)
        st = await asyncio.to_thread(_lookup_sync, path)
        return None if st is None else recording_from_stat(call_sid, path, st)

    async def pin(self, call_sid: str) -> Pin | None:
        """Keep the cached copy from eviction until ``release``; None if it is gone."""
        return await asyncio.to_thread(_pin_sync, self.disk.path_for(call_sid))

    async def evict(self) -> int:
        """Bring the cache under its limit; returns how many files went."""
        if self.max_bytes is None:
            return 0
        try:
            return await asyncio.to_thread(self.evict_sync, self.max_bytes)
        except OSError:
            # The stored object is safe in S3; an eviction problem is not the caller's.
            log.warning("cache eviction failed in %s", self.disk.root, exc_info=True)
            return 0

    def _entries(self) -> list[_Entry]:
        out = []
        with os.scandir(self.disk.root) as it:
            for entry in it:
                sid = entry.name.removesuffix(SUFFIX)
                if not entry.name.endswith(SUFFIX) or not CALL_SID_RE.fullmatch(sid):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                out.append(_Entry(sid, Path(entry.path), st.st_size, st.st_atime_ns))
        return out

    def evict_sync(self, max_bytes: int) -> int:
        """Blocking (directory scan, flocks); from async code use :meth:`evict`."""
        entries = self._entries()
        total = sum(e.size for e in entries)
        removed = 0
        for entry in sorted(entries, key=lambda e: e.used_ns):
            if total <= max_bytes:
                break
            if is_locked(self.disk.lock_path_for(entry.sid)):
                continue  # being written (or uploaded) right now
            if self._unlink_unless_pinned(entry.path):
                total -= entry.size
                removed += 1
                log.info("cache evicted sid=%s bytes=%d", entry.sid, entry.size)
        if total > max_bytes:
            log.info("cache over its limit bytes=%d max=%d (files in use)", total, max_bytes)
        return removed

    @staticmethod
    def _unlink_unless_pinned(path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # pinned by a response being served
            # Still the same file under that name (a publish may have replaced it).
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return False
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(fd)
