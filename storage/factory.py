"""Pick the storage backend the settings name."""

from __future__ import annotations

from config.settings import Settings
from storage.base import RecordingStore
from storage.disk import DiskStore


def open_store(settings: Settings) -> RecordingStore:
    if settings.storage == "s3":
        raise NotImplementedError("STORAGE=s3 arrives with the S3 backend")
    return DiskStore(settings.recordings_dir)
