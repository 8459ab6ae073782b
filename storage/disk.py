"""Recordings as ``<root>/<call_sid>.mp3`` on a local (or shared) filesystem."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from storage.base import CALL_SID_RE, RecordingStore, StoredRecording, make_etag, validate_sid
from storage.locks import file_lock, is_locked
from storage.staging import PART_SUFFIX, StagingFile, fsync_directory

log = logging.getLogger(__name__)

LOCKS_DIRNAME = ".locks"
STALE_PART_AGE_S = 60.0


def recording_from_stat(call_sid: str, path: Path, st: os.stat_result) -> StoredRecording:
    return StoredRecording(
        call_sid=call_sid,
        size=st.st_size,
        mtime=st.st_mtime,
        etag=make_etag(st.st_size, st.st_mtime_ns),
        path=path,
    )


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _sid_of_part(name: str) -> str | None:
    # ".<sid>.<random>.part"; anything else in the directory is not ours to delete.
    if not (name.startswith(".") and name.endswith(PART_SUFFIX)):
        return None
    sid = name[1:].split(".", 1)[0]
    return sid if CALL_SID_RE.fullmatch(sid) else None


def _unlink_durably(path: Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    # An erasure must survive a power cut as a publish does.
    fsync_directory(path.parent)
    log.info("deleted %s", path.name)
    return True


class DiskStore(RecordingStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.locks_dir = self.root / LOCKS_DIRNAME
        # Once, at construction (process start), so later per-request paths need no mkdir.
        self.locks_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, call_sid: str) -> Path:
        return self.root / f"{validate_sid(call_sid)}.mp3"

    def lock_path_for(self, call_sid: str) -> Path:
        return self.locks_dir / f"{validate_sid(call_sid)}.lock"

    async def stat(self, call_sid: str) -> StoredRecording | None:
        path = self.path_for(call_sid)
        st = await asyncio.to_thread(_stat_or_none, path)
        return None if st is None else recording_from_stat(call_sid, path, st)

    def lock(self, call_sid: str) -> AbstractAsyncContextManager[bool]:
        return file_lock(self.lock_path_for(call_sid))

    def staging(self, call_sid: str) -> AbstractAsyncContextManager[StagingFile]:
        return self._staging(validate_sid(call_sid))

    @asynccontextmanager
    async def _staging(self, call_sid: str) -> AsyncIterator[StagingFile]:
        staged = await StagingFile.create(self.root, call_sid)
        try:
            yield staged
        finally:
            # No-op after a publish; otherwise (early return, error, cancellation) the
            # partial file must not linger next to the real ones.
            await staged.discard()

    async def publish(self, staged: StagingFile) -> StoredRecording:
        call_sid = validate_sid(staged.call_sid)
        destination = self.path_for(call_sid)
        if staged.path.parent != self.root:
            raise ValueError(f"{staged.path} was not staged by this store ({self.root})")
        st = await staged.commit(destination)
        log.info("stored sid=%s bytes=%d", call_sid, st.st_size)
        return recording_from_stat(call_sid, destination, st)

    async def delete(self, call_sid: str) -> bool:
        return await asyncio.to_thread(_unlink_durably, self.path_for(call_sid))

    async def startup(self) -> None:
        # Temp files of processes killed mid-download; a live download holds its call's
        # lock, which the sweep checks, so only orphans go.
        removed = await asyncio.to_thread(self.sweep_stale_parts, STALE_PART_AGE_S)
        if removed:
            log.info("removed %d orphaned temp files", removed)

    async def close(self) -> None:
        """Nothing to release: locks and staging files are scoped to their blocks."""

    def sweep_stale_parts(self, older_than_s: float) -> int:
        """Remove ``.part`` files left by dead writers; returns how many were removed.

        Blocking (directory scan); from async code run it with ``asyncio.to_thread``.
        A part counts as stale when it has not been written for ``older_than_s`` and
        nobody holds its call's lock; a live writer holds the lock for the whole
        download, so a stalled-but-alive download is not pulled from under it.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        with os.scandir(self.root) as entries:
            for entry in entries:
                sid = _sid_of_part(entry.name)
                if sid is None or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                        continue
                    if is_locked(self.lock_path_for(sid)):
                        continue
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue  # another sweeper or the writer got there first
                removed += 1
                log.info("removed stale staging file %s", entry.name)
        return removed
