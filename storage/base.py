"""The storage interface every backend (``storage.disk``, ``storage.s3``) implements."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from calls.sids import STORED_SID

if TYPE_CHECKING:
    from storage.staging import StagingFile

# The stored-name pattern (calls/sids.py), under the name storage's modules use: a call's
# primary recording is stored under its Call SID, any other under its Recording SID.
# fullmatch only: re.match or a trailing "$" would let "CA...\n" or "CA.../../x" through.
CALL_SID_RE = STORED_SID


class InvalidSid(ValueError):
    """A value that is not a Call SID was about to become part of a path."""


def validate_sid(call_sid: str) -> str:
    if not isinstance(call_sid, str) or not CALL_SID_RE.fullmatch(call_sid):
        raise InvalidSid(
            f"not a Twilio Call or Recording SID (CA or RE + 32 lowercase hex): {call_sid!r}"
        )
    return call_sid


def make_etag(size: int, mtime_ns: int) -> str:
    # Size plus nanosecond mtime changes whenever the file is replaced, and costs no
    # hashing of megabytes per request.
    return f'"{size:x}-{mtime_ns:x}"'


@dataclass(frozen=True, slots=True)
class StoredRecording:
    call_sid: str
    size: int
    mtime: float
    etag: str
    path: Path | None


class RecordingStore(Protocol):
    async def stat(self, call_sid: str) -> StoredRecording | None:
        """The stored recording, or None when there is none (never a partial one)."""
        ...

    def lock(self, call_sid: str) -> AbstractAsyncContextManager[bool]:
        """Exclusive across processes and hosts sharing the storage, for one call; the
        context value says whether another holder made us wait."""
        ...

    def staging(self, call_sid: str) -> AbstractAsyncContextManager[StagingFile]:
        """A temp file to write into; removed on exit unless published."""
        ...

    async def publish(self, staged: StagingFile) -> StoredRecording:
        """Make the staged bytes the recording, all at once."""
        ...

    async def delete(self, call_sid: str) -> bool:
        """Remove every stored copy (file, cached file, object); True when one existed.
        A response already streaming an open file finishes; nothing new is served."""
        ...

    async def startup(self) -> None:
        """Called once by a worker before it downloads: clear what dead processes left."""
        ...

    async def close(self) -> None: ...
