"""Where recordings live: a disk backend now, S3 (with the disk as cache) later."""

from storage.base import (
    CALL_SID_RE,
    InvalidSid,
    RecordingStore,
    StoredRecording,
    make_etag,
    validate_sid,
)
from storage.disk import DiskStore
from storage.locks import file_lock, is_locked, try_file_lock
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
    "try_file_lock",
    "validate_sid",
]
