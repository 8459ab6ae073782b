"""Recordings as objects ``<prefix><call_sid>.mp3`` in S3 or R2, with the local disk
(``RECORDINGS_DIR``) as a bounded cache in front.

The stored copy is the object: every host sees it. The local disk holds staging files,
the per-call locks (which only exclude processes on this host; the Redis slots are what
span hosts) and copies this host published. Publishing uploads the fsynced staging file
first and renames it into the cache after, so a cached file always has its object.

One boto3 client per process (thread-safe), used only from a small executor of our own:
boto3 blocks, and a slow S3 must not starve the default executor that file I/O uses.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from calls.errors import StorageUnavailable
from config.settings import S3Settings
from storage.base import RecordingStore, StoredRecording, validate_sid
from storage.cache import DiskCache
from storage.disk import DiskStore
from storage.s3_upload import UploadTuning, error_code, http_status, upload_once
from storage.staging import StagingFile

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger(__name__)

T = TypeVar("T")

S3_THREADS = 8
PRESIGN_EXPIRY_S = 300
_MISSING = {"404", "NoSuchKey", "NotFound"}
_DENIED = {
    "403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
}


def make_client(s3: S3Settings, *, max_pool_connections: int = S3_THREADS) -> S3Client:
    options: dict[str, Any] = {
        # R2 accepts nothing but SigV4; AWS wants it too for presigned URLs in new regions.
        "signature_version": "s3v4",
        "region_name": s3.region,
        "retries": {"mode": "standard", "max_attempts": 3},
        "connect_timeout": 5,
        "read_timeout": 30,
        "max_pool_connections": max_pool_connections,
    }
    if s3.endpoint_url:
        # S3-compatible servers (R2, MinIO, moto) take path-style keys on any host name,
        # and not all of them speak the newer default CRC checksums.
        options["s3"] = {"addressing_style": "path"}
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    client: S3Client = boto3.session.Session().client(
        "s3", endpoint_url=s3.endpoint_url, config=Config(**options)
    )
    return client


def storage_error(exc: Exception, bucket: str) -> StorageUnavailable:
    """An S3 failure as the error the web answers 503 for and a worker retries."""
    if isinstance(exc, ClientError):
        code = error_code(exc) or str(http_status(exc))
        if code == "NoSuchBucket":
            return StorageUnavailable(f"S3 bucket {bucket!r} does not exist")
        if code in _DENIED:
            return StorageUnavailable(f"access to S3 bucket {bucket!r} denied ({code})")
        return StorageUnavailable(f"S3 error {code} (HTTP {http_status(exc)})")
    return StorageUnavailable(f"S3 unreachable: {exc}")


@dataclass
class ObjectRange:
    """An open GetObject answer: headers already known, body read in chunks."""

    status: int
    headers: dict[str, str]
    body: StreamingBody | None  # None for a 416


class S3Store(RecordingStore):
    def __init__(
        self,
        s3: S3Settings,
        cache_root: Path,
        *,
        upload_tuning: UploadTuning | None = None,
    ) -> None:
        self.s3 = s3
        self.bucket = s3.bucket
        self.cache = DiskCache(DiskStore(cache_root), s3.cache_max_bytes)
        self.upload_tuning = upload_tuning or UploadTuning()
        self._client = make_client(s3)
        self._executor = ThreadPoolExecutor(max_workers=S3_THREADS, thread_name_prefix="s3")

    def key_for(self, call_sid: str) -> str:
        return f"{self.s3.prefix}{validate_sid(call_sid)}.mp3"

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a boto3 call on our executor; its errors as StorageUnavailable."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )
        except (ClientError, BotoCoreError) as exc:
            raise storage_error(exc, self.bucket) from exc

    async def stat(self, call_sid: str) -> StoredRecording | None:
        local = await self.cache.lookup(call_sid)
        if local is not None:
            return local
        return await self.head(call_sid)

    async def head(self, call_sid: str) -> StoredRecording | None:
        """The object's metadata (``path`` None: not on this disk), None when absent."""
        key = self.key_for(call_sid)
        try:
            answer = await self._run(self._client.head_object, Bucket=self.bucket, Key=key)
        except StorageUnavailable as exc:
            cause = exc.__cause__
            # A HEAD has no body, so a missing bucket looks like a missing key here; the
            # upload that follows names the bucket problem.
            if isinstance(cause, ClientError) and error_code(cause) in _MISSING:
                return None
            raise
        return StoredRecording(
            call_sid=call_sid,
            size=answer["ContentLength"],
            mtime=answer["LastModified"].timestamp(),
            etag=answer["ETag"],
            path=None,
        )

    def lock(self, call_sid: str) -> AbstractAsyncContextManager[bool]:
        return self.cache.disk.lock(call_sid)

    def staging(self, call_sid: str) -> AbstractAsyncContextManager[StagingFile]:
        return self.cache.disk.staging(call_sid)

    async def publish(self, staged: StagingFile) -> StoredRecording:
        call_sid = validate_sid(staged.call_sid)
        key = self.key_for(call_sid)
        await staged.sync()
        wrote = await self._run(
            upload_once, self._client, staged.path, self.bucket, key, self.upload_tuning
        )
        log.info("uploaded sid=%s key=%s bytes=%d new=%s", call_sid, key, staged.size, wrote)
        stored = await self.cache.disk.publish(staged)
        await self.cache.evict()
        return stored

    async def delete(self, call_sid: str) -> bool:
        key = self.key_for(call_sid)
        existed = await self.head(call_sid) is not None
        # DeleteObject answers 204 whether or not the key existed.
        await self._run(self._client.delete_object, Bucket=self.bucket, Key=key)
        cached = await self.cache.disk.delete(call_sid)
        log.info("deleted sid=%s key=%s existed=%s", call_sid, key, existed)
        return existed or cached

    async def startup(self) -> None:
        await self.cache.disk.startup()
        await self.cache.evict()
        try:
            await self._run(self._client.head_bucket, Bucket=self.bucket)
        except StorageUnavailable as exc:
            # Not fatal: downloads fail (and retry, then dead-letter) with this reason,
            # and the worker recovers by itself once the bucket is fixed.
            log.warning("S3 bucket check failed: %s", exc.detail)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    async def presigned_get(self, call_sid: str, *, disposition: str | None) -> str:
        """A SigV4 GET URL valid for ``PRESIGN_EXPIRY_S``; the client fetches the bytes."""
        params: dict[str, str] = {
            "Bucket": self.bucket,
            "Key": self.key_for(call_sid),
            "ResponseContentType": "audio/mpeg",
        }
        if disposition:
            params["ResponseContentDisposition"] = disposition
        url: str = await self._run(
            self._client.generate_presigned_url,
            "get_object",
            Params=params,
            ExpiresIn=PRESIGN_EXPIRY_S,
        )
        return url

    async def get_range(self, call_sid: str, byte_range: str | None) -> ObjectRange:
        """GetObject with ``Range`` (``bytes=a-b``) passed on; 200, 206 or 416."""
        kwargs: dict[str, str] = {"Bucket": self.bucket, "Key": self.key_for(call_sid)}
        if byte_range:
            kwargs["Range"] = byte_range
        try:
            answer = await self._run(self._client.get_object, **kwargs)
        except StorageUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and error_code(cause) == "InvalidRange":
                return ObjectRange(416, _range_error_headers(cause), None)
            raise
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Length": str(answer["ContentLength"]),
            "Content-Type": "audio/mpeg",
            "ETag": answer["ETag"],
            "Last-Modified": answer["ResponseMetadata"]["HTTPHeaders"].get("last-modified", ""),
        }
        status = 200
        if answer.get("ContentRange"):
            status = 206
            headers["Content-Range"] = answer["ContentRange"]
        return ObjectRange(status, headers, answer["Body"])

    async def read_chunk(self, body: StreamingBody, chunk_bytes: int) -> bytes:
        data: bytes = await self._run(body.read, chunk_bytes)
        return data


def _range_error_headers(exc: ClientError) -> dict[str, str]:
    size = exc.response.get("Error", {}).get("ActualObjectSize")
    headers = {"Accept-Ranges": "bytes"}
    if size:
        headers["Content-Range"] = f"bytes */{size}"
    return headers
