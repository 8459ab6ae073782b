"""Where recordings live: the local disk (``disk``), or S3/R2 with the local disk as a
bounded cache in front (``s3``)."""

from storage.base import (
    CALL_SID_RE,
    InvalidSid,
    RecordingStore,
    StoredRecording,
    make_etag,
    validate_sid,
)
from storage.disk import DiskStore
from storage.locks import file_lock, is_locked
from storage.staging import BUFFER_LIMIT, StagingFile

__all__ = [
    "BUFFER_LIMIT",
    "CALL_SID_RE",
    "DiskStore",
    "InvalidSid",
    "RecordingStore",
    "StagingFile",
    "StoredRecording",
    "file_lock",
    "is_locked",
    "make_etag",
    "validate_sid",
]
