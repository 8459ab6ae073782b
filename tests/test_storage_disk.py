"""storage.DiskStore and StagingFile against real files in tmp_path."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from storage import (
    BUFFER_LIMIT,
    DiskStore,
    InvalidSid,
    RecordingStore,
    StagingFile,
    file_lock,
    is_locked,
    make_etag,
)

SID = "CA" + "0123456789abcdef" * 2
OTHER_SID = "CA" + "f" * 32


def parts(root: Path) -> list[Path]:
    return sorted(root.glob(".*.part"))


@pytest.fixture
def store(tmp_path: Path) -> DiskStore:
    return DiskStore(tmp_path / "recordings")


def test_constructor_creates_root_and_locks_dir(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / ".locks").is_dir()
    assert store.path_for(SID) == tmp_path / "a" / "b" / f"{SID}.mp3"
    _: RecordingStore = store  # satisfies the protocol the rest of the app uses


async def test_publish_is_atomic_and_stat_matches_the_file(store: DiskStore) -> None:
    final = store.path_for(SID)
    payload = os.urandom(3 * BUFFER_LIMIT + 12345)
    async with store.staging(SID) as staged:
        assert staged.path.parent == store.root
        assert staged.path.name.startswith(f".{SID}.") and staged.path.name.endswith(".part")
        for i in range(0, len(payload), 65536):
            await staged.write(payload[i : i + 65536])
            assert not final.exists()
            assert await store.stat(SID) is None
        assert staged.size == len(payload)
        recording = await store.publish(staged)
        assert not staged.path.exists()

    assert final.read_bytes() == payload
    st = os.stat(final)
    assert recording.call_sid == SID
    assert recording.path == final
    assert recording.size == st.st_size == len(payload)
    assert recording.mtime == st.st_mtime
    assert recording.etag == make_etag(st.st_size, st.st_mtime_ns)
    assert recording.etag.startswith('"') and recording.etag.endswith('"')
    assert await store.stat(SID) == recording
    assert parts(store.root) == []


async def test_publish_replaces_and_changes_etag(store: DiskStore) -> None:
    async with store.staging(SID) as staged:
        await staged.write(b"first")
        first = await store.publish(staged)
    async with store.staging(SID) as staged:
        await staged.write(b"second!")
        second = await store.publish(staged)
    assert store.path_for(SID).read_bytes() == b"second!"
    assert second.etag != first.etag
    assert (await store.stat(SID)) == second


async def test_published_file_is_readable_by_others(store: DiskStore) -> None:
    # A front server (nginx) may run as another user; a 0600 temp file would hide it.
    async with store.staging(SID) as staged:
        await staged.write(b"x")
        await store.publish(staged)
    assert os.stat(store.path_for(SID)).st_mode & 0o044 == 0o044 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


async def test_staging_exit_without_publish_removes_temp_file(store: DiskStore) -> None:
    async with store.staging(SID) as staged:
        await staged.write(b"x" * (BUFFER_LIMIT + 10))
        assert staged.path.exists()
    assert not staged.path.exists()
    assert parts(store.root) == []
    assert await store.stat(SID) is None


async def test_staging_exit_by_exception_removes_temp_file(store: DiskStore) -> None:
    with pytest.raises(ConnectionError):
        async with store.staging(SID) as staged:
            await staged.write(b"partial body")
            assert staged.path.exists()
            raise ConnectionError("body cut off")
    assert not staged.path.exists()
    assert parts(store.root) == []
    assert not store.path_for(SID).exists()


async def test_staging_exit_by_cancellation_removes_temp_file(store: DiskStore) -> None:
    entered = asyncio.Event()
    seen: list[StagingFile] = []

    async def download() -> None:
        async with store.staging(SID) as staged:
            seen.append(staged)
            await staged.write(b"y" * (2 * BUFFER_LIMIT + 1))
            entered.set()
            await asyncio.Event().wait()  # a stalled Twilio response

    task = asyncio.create_task(download())
    await entered.wait()
    assert seen[0].path.exists()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not seen[0].path.exists()
    assert parts(store.root) == []


async def test_cancellation_during_a_flush_still_removes_temp_file(store: DiskStore) -> None:
    seen: list[StagingFile] = []
    busy = asyncio.Event()

    async def download() -> None:
        async with store.staging(SID) as staged:
            seen.append(staged)
            while True:  # cancelled at whatever await it happens to be in
                await staged.write(b"z" * 65536)
                if staged.size >= 4 * BUFFER_LIMIT:
                    busy.set()

    task = asyncio.create_task(download())
    await busy.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not seen[0].path.exists()
    assert parts(store.root) == []


@pytest.mark.parametrize(
    "bad",
    [
        "../etc/passwd",
        "CA123",
        "CA" + "0123456789ABCDEF" * 2,  # uppercase hex
        "ca" + "0" * 32,
        "CA" + "0" * 33,
        "CA" + "0" * 31,
        "CA" + "0" * 32 + "\n",
        "CA" + "0" * 31 + "/",
        "CF" + "0" * 32,  # a Conference SID: conference recordings are stored by RE SID
        "RE" + "0" * 31 + "/",
        "",
        f"../{SID}",
        f"{SID}.mp3",
    ],
)
async def test_invalid_sids_never_become_paths(store: DiskStore, bad: str) -> None:
    with pytest.raises(InvalidSid):
        store.path_for(bad)
    with pytest.raises(InvalidSid):
        await store.stat(bad)
    with pytest.raises(InvalidSid):
        store.lock(bad)
    with pytest.raises(InvalidSid):
        store.staging(bad)
    assert issubclass(InvalidSid, ValueError)
    assert sorted(p.name for p in store.root.iterdir()) == [".locks"]


async def test_buffer_stays_bounded_and_file_is_correct(store: DiskStore) -> None:
    chunk_size = 64 * 1024
    payload = os.urandom(5 * 1024 * 1024)
    largest = 0
    async with store.staging(SID) as staged:
        for i in range(0, len(payload), chunk_size):
            await staged.write(payload[i : i + chunk_size])
            largest = max(largest, staged.buffered)
            assert staged.buffered <= BUFFER_LIMIT
            # Whatever is not in memory is already in the file.
            assert os.stat(staged.path).st_size == staged.size - staged.buffered
        assert staged.size == len(payload)
        recording = await store.publish(staged)
    assert BUFFER_LIMIT // 2 < largest <= BUFFER_LIMIT
    assert recording.size == len(payload)
    assert store.path_for(SID).read_bytes() == payload


async def test_chunks_larger_than_the_buffer_are_not_buffered(store: DiskStore) -> None:
    payload = os.urandom(3 * BUFFER_LIMIT)
    async with store.staging(SID) as staged:
        await staged.write(b"head")
        await staged.write(payload)
        assert staged.buffered <= BUFFER_LIMIT
        await staged.write(b"tail")
        await store.publish(staged)
    assert store.path_for(SID).read_bytes() == b"head" + payload + b"tail"


async def test_staging_file_is_finished_after_publish(store: DiskStore) -> None:
    async with store.staging(SID) as staged:
        await staged.write(b"done")
        await store.publish(staged)
        with pytest.raises(RuntimeError):
            await staged.write(b"more")
        with pytest.raises(RuntimeError):
            await store.publish(staged)
    assert store.path_for(SID).read_bytes() == b"done"


async def test_publish_refuses_a_file_staged_elsewhere(tmp_path: Path) -> None:
    one, two = DiskStore(tmp_path / "one"), DiskStore(tmp_path / "two")
    async with one.staging(SID) as staged:
        await staged.write(b"x")
        with pytest.raises(ValueError):
            await two.publish(staged)
    assert not two.path_for(SID).exists()
    assert parts(one.root) == []


async def test_store_lock_is_per_call(store: DiskStore) -> None:
    async with store.lock(SID):
        assert is_locked(store.lock_path_for(SID))
        assert not is_locked(store.lock_path_for(OTHER_SID))
        async with store.lock(OTHER_SID):  # another call is not held up
            assert is_locked(store.lock_path_for(OTHER_SID))
    assert not is_locked(store.lock_path_for(SID))
    assert store.lock_path_for(SID).parent == store.root / ".locks"
    await store.close()


def _make_part(root: Path, sid: str, tag: str, age_s: float) -> Path:
    path = root / f".{sid}.{tag}.part"
    path.write_bytes(b"partial")
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


async def test_sweep_stale_parts(store: DiskStore) -> None:
    root = store.root
    old = _make_part(root, SID, "0a0a", 3600)
    fresh = _make_part(root, SID, "0b0b", 0)
    old_but_locked = _make_part(root, OTHER_SID, "0c0c", 3600)
    old_mp3 = root / f"{SID}.mp3"
    old_mp3.write_bytes(b"done")
    foreign = root / ".notes.part"  # not ours: no SID in it
    foreign.write_bytes(b"?")
    for path in (old_mp3, foreign):
        os.utime(path, (time.time() - 3600,) * 2)

    async with file_lock(store.lock_path_for(OTHER_SID)):
        # A writer holding the call's lock is alive, however old its part file looks.
        removed = await asyncio.to_thread(store.sweep_stale_parts, 60)

    assert removed == 1
    assert not old.exists()
    assert fresh.exists()
    assert old_but_locked.exists()
    assert old_mp3.read_bytes() == b"done"
    assert foreign.exists()

    assert store.sweep_stale_parts(60) == 1  # the lock is free now
    assert not old_but_locked.exists()
    assert fresh.exists()
