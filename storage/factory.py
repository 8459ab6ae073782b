"""Pick the storage backend the settings name."""

from __future__ import annotations

from config.settings import Settings
from storage.base import RecordingStore
from storage.disk import DiskStore


def open_store(settings: Settings) -> RecordingStore:
    if settings.storage == "s3":
        # Imported here so a disk deployment never loads boto3.
        from storage.s3 import S3Store

        assert settings.s3 is not None
        return S3Store(settings.s3, settings.recordings_dir)
    return DiskStore(settings.recordings_dir)
