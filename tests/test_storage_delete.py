"""Deleting stored recordings (erasure): the file, the cached copy and the object; a
Recording SID is a valid stored name next to Call SIDs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callrec.local_s3 import LocalS3
from storage.base import RecordingStore
from storage.disk import DiskStore
from storage.s3 import S3Store
from tests.helpers import call_sid, rec_sid
from tests.test_storage_s3 import aws_credentials, settings_for

__all__ = ["aws_credentials"]  # the fixture, used here too


async def put(store: RecordingStore, sid: str, data: bytes) -> None:
    async with store.staging(sid) as staged:
        await staged.write(data)
        await store.publish(staged)


async def test_disk_delete_removes_the_file_once(tmp_path: Path) -> None:
    store = DiskStore(tmp_path)
    await put(store, call_sid(1), b"primary")
    await put(store, rec_sid(2), b"voicemail")
    assert sorted(await asyncio.to_thread(os.listdir, tmp_path)) == [
        ".locks",
        f"{call_sid(1)}.mp3",
        f"{rec_sid(2)}.mp3",
    ]
    assert await store.delete(rec_sid(2)) is True
    assert await store.stat(rec_sid(2)) is None
    assert await store.delete(rec_sid(2)) is False
    stored = await store.stat(call_sid(1))
    assert stored is not None and stored.size == len(b"primary")


@pytest.fixture
async def s3_store(tmp_path: Path, local_s3: LocalS3, s3_bucket: str) -> AsyncIterator[S3Store]:
    s = S3Store(settings_for(local_s3, s3_bucket, prefix="recs/"), tmp_path / "cache")
    yield s
    await s.close()


async def test_s3_delete_removes_object_and_cached_copy(
    s3_store: S3Store, local_s3: LocalS3, s3_bucket: str
) -> None:
    await put(s3_store, rec_sid(3), b"conference")
    cached = s3_store.cache.disk.path_for(rec_sid(3))
    assert await asyncio.to_thread(cached.exists)
    assert await s3_store.delete(rec_sid(3)) is True
    assert not await asyncio.to_thread(cached.exists)
    assert await s3_store.head(rec_sid(3)) is None
    listed = local_s3.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    assert listed == []
    assert await s3_store.delete(rec_sid(3)) is False
