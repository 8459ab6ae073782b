"""A temp file next to its final name, written in bounded chunks, committed atomically.

This is the local-file layer shared by the disk store and the disk cache in front of
S3, so it knows nothing about stores, only about a directory and a name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

# Bounds memory per download; large enough that the worker-thread hop per flush is cheap.
BUFFER_LIMIT = 1024 * 1024
PART_SUFFIX = ".part"


def part_name(call_sid: str) -> str:
    return f".{call_sid}.{secrets.token_hex(8)}{PART_SUFFIX}"


def fsync_directory(directory: Path) -> None:
    # Without this the rename itself may not survive a power cut, even though the
    # file's data was fsynced.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_exclusive(directory: Path, call_sid: str) -> tuple[Path, int]:
    while True:
        path = directory / part_name(call_sid)
        try:
            # Not mkstemp: its 0600 would survive the rename and hide the file from a
            # front server (nginx X-Accel) running as another user; 0644 minus umask
            # matches any other file the service writes.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            continue
        return path, fd


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class StagingFile:
    """One writer at a time; ``write`` is not meant to be called concurrently."""

    def __init__(self, call_sid: str, path: Path, fd: int) -> None:
        self.call_sid = call_sid
        self.path = path
        self.size = 0
        self._fd: int | None = fd
        self._buffer = bytearray()
        # A flush runs on in a thread even if its awaiting task is cancelled; later
        # operations wait for it so that bytes land in order and the fd is not closed
        # under a running write.
        self._pending: asyncio.Future[None] | None = None
        self._done = False

    @classmethod
    async def create(cls, directory: Path, call_sid: str) -> StagingFile:
        # Same directory as the final file: os.replace is only atomic within a filesystem.
        path, fd = await asyncio.to_thread(_create_exclusive, directory, call_sid)
        log.debug("staging %s at %s", call_sid, path)
        return cls(call_sid, path, fd)

    @property
    def buffered(self) -> int:
        """Bytes held in memory, not yet handed to the OS."""
        return len(self._buffer)

    async def write(self, chunk: bytes) -> None:
        if self._done:
            raise RuntimeError(f"staging file for {self.call_sid} is already finished")
        if not chunk:
            return
        if len(self._buffer) + len(chunk) > BUFFER_LIMIT:
            await self._flush()
        if len(chunk) >= BUFFER_LIMIT:
            # The caller already holds this chunk; copying it into the buffer would
            # double the memory for nothing.
            await self._hand_off(bytes(chunk))
        else:
            self._buffer += chunk
        self.size += len(chunk)

    async def _flush(self) -> None:
        if not self._buffer:
            await self._wait_pending()
            return
        # Swap rather than copy, so a flush never holds two buffers' worth of memory.
        data, self._buffer = self._buffer, bytearray()
        await self._hand_off(data)

    async def _hand_off(self, data: bytes | bytearray) -> None:
        await self._wait_pending()
        fd = self._require_fd()
        pending = asyncio.ensure_future(asyncio.to_thread(_write_all, fd, data))
        self._pending = pending
        await asyncio.shield(pending)

    async def _wait_pending(self) -> None:
        pending = self._pending
        if pending is not None:
            await asyncio.shield(pending)
            self._pending = None

    def _require_fd(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"staging file for {self.call_sid} is closed")
        return self._fd

    async def sync(self) -> None:
        """Flush and fsync, keeping the file open for a later :meth:`commit`.

        The S3 backend uploads from ``path`` between the two, so the object is made
        from exactly the bytes the local copy will hold.
        """
        if self._done:
            raise RuntimeError(f"staging file for {self.call_sid} is already finished")
        await self._flush()
        fd = self._require_fd()
        await asyncio.shield(asyncio.to_thread(os.fsync, fd))

    async def commit(self, destination: Path) -> os.stat_result:
        """Flush, fsync, rename over ``destination``, fsync the directory.

        ``destination`` must be in the same directory. Readers of ``destination`` see
        the old state or the whole new file, never a prefix.
        """
        if self._done:
            raise RuntimeError(f"staging file for {self.call_sid} is already finished")
        if destination.parent != self.path.parent:
            raise ValueError("commit target must be in the staging file's directory")
        await self._flush()
        fd = self._require_fd()
        self._done = True
        self._fd = None
        # Shielded: once the rename is under way, a cancelled caller must not leave the
        # fd open or the rename half-done; the file is complete either way.
        return await asyncio.shield(
            asyncio.to_thread(self._commit_sync, fd, self.path, destination)
        )

    @staticmethod
    def _commit_sync(fd: int, path: Path, destination: Path) -> os.stat_result:
        try:
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(path)
            raise
        os.close(fd)
        try:
            os.replace(path, destination)
        except BaseException:
            _unlink_quietly(path)
            raise
        fsync_directory(destination.parent)
        return os.stat(destination)

    async def discard(self) -> None:
        """Drop the temp file. Safe to call more than once and after a commit."""
        if self._done:
            return
        self._done = True
        self._buffer.clear()
        fd, self._fd = self._fd, None
        pending, self._pending = self._pending, None
        await asyncio.shield(self._discard_after(pending, fd))

    async def _discard_after(self, pending: asyncio.Future[None] | None, fd: int | None) -> None:
        if pending is not None:
            # A failed or interrupted write does not matter any more: the file goes.
            await asyncio.gather(pending, return_exceptions=True)
        await asyncio.to_thread(self._discard_sync, fd, self.path)
        log.debug("discarded staging file %s", self.path)

    @staticmethod
    def _discard_sync(fd: int | None, path: Path) -> None:
        if fd is not None:
            os.close(fd)
        _unlink_quietly(path)
