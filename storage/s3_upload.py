"""Upload one finished local file as an object that appears only complete, and only once.

Not boto3's ``upload_file``: s3transfer refuses ``IfNoneMatch`` in its extra arguments,
and the conditional write is what keeps a second writer (a worker that lost its lease,
a second host) from replacing an object that is already there. So: one ``PutObject``
for a small file, a multipart upload for a large one, both with ``If-None-Match: *``
(on ``CompleteMultipartUpload`` for multipart, which is where S3 and R2 check it).
A server that ignores the header still gets a whole object: PUT and Complete are atomic.

Blocking; the store runs it on its executor.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# S3 and R2 refuse parts under 5 MiB except the last.
MIN_PART_BYTES = 5 * MIB


@dataclass(frozen=True, slots=True)
class UploadTuning:
    multipart_threshold_bytes: int = 16 * MIB
    part_bytes: int = 8 * MIB

    def __post_init__(self) -> None:
        if self.part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be at least {MIN_PART_BYTES}")


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_precondition_failed(exc: ClientError) -> bool:
    return error_code(exc) == "PreconditionFailed" or http_status(exc) == 412


def upload_once(client: S3Client, path: Path, bucket: str, key: str, tuning: UploadTuning) -> bool:
    """Store ``path`` as ``key`` unless an object is already there.

    Returns True when this call wrote the object, False when one already existed (the
    condition failed): both mean the object is stored.
    """
    size = os.path.getsize(path)
    try:
        if size <= tuning.multipart_threshold_bytes:
            with open(path, "rb") as body:
                client.put_object(
                    Bucket=bucket,
                    Key=key,
                    Body=body,
                    ContentLength=size,
                    ContentType="audio/mpeg",
                    IfNoneMatch="*",
                )
        else:
            _multipart(client, path, bucket, key, tuning.part_bytes)
    except ClientError as exc:
        if is_precondition_failed(exc):
            log.info("object already stored key=%s", key)
            return False
        raise
    return True


def _multipart(client: S3Client, path: Path, bucket: str, key: str, part_bytes: int) -> None:
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType="audio/mpeg")[
        "UploadId"
    ]
    try:
        parts: list[CompletedPartTypeDef] = []
        with open(path, "rb") as f:
            number = 1
            while chunk := f.read(part_bytes):
                answer = client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
                number += 1
        client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            IfNoneMatch="*",
        )
    except BaseException:
        # Uploaded parts are billed until aborted; an abort failure is only logged.
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:
            log.warning("could not abort multipart upload key=%s", key, exc_info=True)
        raise
