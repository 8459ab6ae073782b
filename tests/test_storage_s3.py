"""The S3 store against a real S3-compatible server (moto's standalone server on
loopback): uploads, conditional writes, multipart, the LRU disk cache, error mapping."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callrec.local_s3 import LocalS3
from calls.errors import StorageUnavailable
from config.settings import S3Settings
from storage.locks import file_lock
from storage.s3 import S3Store
from storage.s3_upload import MIB, UploadTuning
from tests.helpers import call_sid


def settings_for(
    server: LocalS3, bucket: str, *, prefix: str = "", cache_max_bytes: int | None = None
) -> S3Settings:
    return S3Settings(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=server.url,
        serve_via="redirect",
        cache_max_bytes=cache_max_bytes,
        region="us-east-1",
    )


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch, local_s3: LocalS3) -> None:
    # The store takes credentials from boto3's standard chain, as in production.
    for name, value in local_s3.env("unused").items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)


@pytest.fixture
async def store(tmp_path: Path, local_s3: LocalS3, s3_bucket: str) -> AsyncIterator[S3Store]:
    s = S3Store(settings_for(local_s3, s3_bucket, prefix="recs/"), tmp_path / "cache")
    yield s
    await s.close()


async def put(store: S3Store, sid: str, data: bytes) -> None:
    async with store.staging(sid) as staged:
        await staged.write(data)
        await store.publish(staged)


def object_bytes(server: LocalS3, bucket: str, key: str) -> bytes:
    body: bytes = server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


async def test_publish_uploads_under_prefix_and_caches_locally(
    store: S3Store, local_s3: LocalS3, s3_bucket: str
) -> None:
    sid = call_sid(1)
    data = secrets.token_bytes(100_000)
    await put(store, sid, data)
    assert object_bytes(local_s3, s3_bucket, f"recs/{sid}.mp3") == data
    cached = await store.stat(sid)
    assert cached is not None and cached.path is not None and cached.size == len(data)
    assert cached.path.read_bytes() == data
    # No staging leftovers next to the cached copy.
    assert sorted(p.name for p in cached.path.parent.iterdir() if p.is_file()) == [f"{sid}.mp3"]

    cached.path.unlink()
    remote = await store.stat(sid)
    assert remote is not None and remote.path is None
    assert remote.size == len(data) and remote.etag.startswith('"')
    assert await store.stat(call_sid(2)) is None


async def test_a_second_writer_never_replaces_the_object(
    store: S3Store, local_s3: LocalS3, s3_bucket: str, tmp_path: Path
) -> None:
    sid = call_sid(3)
    await put(store, sid, b"first writer " * 1000)
    other = S3Store(settings_for(local_s3, s3_bucket, prefix="recs/"), tmp_path / "other-cache")
    try:
        await put(other, sid, b"late writer " * 1000)  # PreconditionFailed counts as stored
    finally:
        await other.close()
    assert object_bytes(local_s3, s3_bucket, f"recs/{sid}.mp3") == b"first writer " * 1000


async def test_large_files_go_up_in_parts(
    local_s3: LocalS3, s3_bucket: str, tmp_path: Path
) -> None:
    store = S3Store(
        settings_for(local_s3, s3_bucket),
        tmp_path / "cache",
        upload_tuning=UploadTuning(multipart_threshold_bytes=5 * MIB, part_bytes=5 * MIB),
    )
    try:
        sid = call_sid(4)
        data = secrets.token_bytes(11 * MIB)
        await put(store, sid, data)
        head = local_s3.client().head_object(Bucket=s3_bucket, Key=f"{sid}.mp3")
        assert head["ETag"].endswith('-3"')  # three parts: 5 + 5 + 1 MiB
        assert object_bytes(local_s3, s3_bucket, f"{sid}.mp3") == data
        assert not local_s3.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    finally:
        await store.close()


async def test_cache_evicts_least_recently_used_but_never_files_in_use(
    local_s3: LocalS3, s3_bucket: str, tmp_path: Path
) -> None:
    size = 40_000
    store = S3Store(settings_for(local_s3, s3_bucket, cache_max_bytes=3 * size), tmp_path / "cache")
    root = store.cache.disk.root
    a, b, c, d, e, f = (call_sid(n) for n in range(10, 16))
    try:
        for sid in (a, b, c):
            await put(store, sid, os.urandom(size))
        assert await store.cache.lookup(a) is not None  # a is now more recent than b
        await put(store, sid=d, data=os.urandom(size))
        assert not (root / f"{b}.mp3").exists()
        assert {p.name for p in root.glob("*.mp3")} == {f"{a}.mp3", f"{c}.mp3", f"{d}.mp3"}

        # c is the oldest now, but it is being served (pinned) and a is being written
        # (its call lock is held): the next publish must pass over both and take d.
        pin = await store.cache.pin(c)
        assert pin is not None
        async with file_lock(store.cache.disk.lock_path_for(a)):
            await put(store, sid=e, data=os.urandom(size))
        assert {p.name for p in root.glob("*.mp3")} == {f"{a}.mp3", f"{c}.mp3", f"{e}.mp3"}
        pin.release()
        await put(store, sid=f, data=os.urandom(size))
        assert not (root / f"{c}.mp3").exists()

        # Everything evicted is still stored: the bucket has all six.
        for sid in (a, b, c, d, e, f):
            found = await store.stat(sid)
            assert found is not None and found.size == size
    finally:
        await store.close()


async def test_missing_bucket_is_a_storage_error_and_nothing_is_cached(
    local_s3: LocalS3, s3_bucket: str, tmp_path: Path
) -> None:
    missing = S3Store(settings_for(local_s3, "no-such-bucket-here"), tmp_path / "c1")
    try:
        assert await missing.stat(call_sid(20)) is None  # a HEAD cannot tell, the PUT does
        with pytest.raises(StorageUnavailable, match="'no-such-bucket-here' does not exist"):
            await put(missing, call_sid(20), b"x" * 100)
        assert list((tmp_path / "c1").glob("*.mp3")) == []  # nothing cached without an object
    finally:
        await missing.close()
