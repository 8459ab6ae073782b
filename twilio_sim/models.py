"""The simulator's vocabulary: recordings, injectable faults, and their media bytes."""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

DEMO_ACCOUNT_SID = "AC" + "d3a0" * 8
DEMO_AUTH_TOKEN = "5e1f" * 8
# A default call: from this caller to callrec's (the business's) number.
DEFAULT_FROM = "+15550000001"
DEFAULT_TO = "+15550000002"

# An ID3v2.4 header with an empty tag: enough for players and `file` to call it MP3-ish.
_ID3_HEADER = b"ID3\x04\x00\x00\x00\x00\x00\x00"

# MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, mono, no CRC: every frame is 417 bytes. Its side
# information is all zeros (no main data: the frame decodes to silence), so the rest of the
# frame is ancillary data that decoders skip: it carries the random bytes that make every
# body distinct. Browsers really play these, so the page's audio elements can be tested.
_FRAME_HEADER = b"\xff\xfb\x90\xc4"
_SIDE_INFO = bytes(17)
_FRAME_BYTES = 417

FaultKind = Literal["not_found", "too_many", "server_error", "cut_off", "stall"]


@dataclass(frozen=True)
class SimRecording:
    """One recording at Twilio. A conference recording has a ``conference_sid`` and may
    have no ``call_sid`` (""), as Twilio's callbacks for it do."""

    business_id: str
    call_sid: str
    recording_sid: str
    size_bytes: int = 64 * 1024
    duration_s: int = 30
    conference_sid: str = ""
    # Twilio's RecordingSource words: DialVerb, RecordVerb, Conference, StartCallRecordingAPI...
    source: str = "RecordVerb"
    channels: int = 1
    # When Twilio created it (listing order and date filters); None: when it was added.
    created_at: datetime | None = None
    # The account it is filed under (served only under that account's path); None: the
    # simulator's main account.
    account_sid: str | None = None


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour of a single media request; build them with the constructors."""

    kind: FaultKind
    status: int = 200
    retry_after_s: float | None = None
    after_bytes: int = 0
    seconds: float = 0.0

    @classmethod
    def not_found(cls) -> Fault:
        return cls("not_found", status=404)

    @classmethod
    def too_many(cls, retry_after_s: float | None = None) -> Fault:
        return cls("too_many", status=429, retry_after_s=retry_after_s)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls("server_error", status=status)

    @classmethod
    def cut_off(cls, after_bytes: int) -> Fault:
        return cls("cut_off", after_bytes=after_bytes)

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        return cls("stall", seconds=seconds)

    @property
    def is_status(self) -> bool:
        """True when the fault replaces the whole response instead of spoiling a 200 body."""
        return self.kind in ("not_found", "too_many", "server_error")


# Above this size a body is generated block by block as it is sent, never held whole: a
# 500 MB recording must not cost the simulator (or the bench process hosting it) 500 MB.
STREAMED_ABOVE_BYTES = 8 * 1024 * 1024
_BLOCK_BYTES = 1024 * 1024


@functools.lru_cache(maxsize=64)
def _small_media_bytes(rec: SimRecording) -> bytes:
    """A playable MP3 (ID3 tag, then silent frames) that never repeats: browsers can
    play what the page fetches. Large bodies stay random blocks, generated as sent."""
    rng = random.Random(hashlib.sha256(rec.recording_sid.encode()).digest())
    frames, padding = divmod(rec.size_bytes - len(_ID3_HEADER), _FRAME_BYTES)
    if frames < 1:
        if rec.size_bytes <= len(_ID3_HEADER):
            return _ID3_HEADER[: rec.size_bytes]
        return _ID3_HEADER + rng.randbytes(rec.size_bytes - len(_ID3_HEADER))
    # The tag's padding absorbs what whole frames leave over, so the size is exact.
    tag_size = bytes((padding >> shift) & 0x7F for shift in (21, 14, 7, 0))  # syncsafe
    ancillary = _FRAME_BYTES - len(_FRAME_HEADER) - len(_SIDE_INFO)
    parts = [_ID3_HEADER[:6], tag_size, bytes(padding)]
    for _ in range(frames):
        parts += [_FRAME_HEADER, _SIDE_INFO, rng.randbytes(ancillary)]
    return b"".join(parts)


def _large_media_blocks(rec: SimRecording) -> Iterator[bytes]:
    seed = hashlib.sha256(rec.recording_sid.encode()).digest()
    yield _ID3_HEADER
    remaining = rec.size_bytes - len(_ID3_HEADER)
    block = 0
    while remaining > 0:
        n = min(_BLOCK_BYTES, remaining)
        yield random.Random(seed + block.to_bytes(8, "big")).randbytes(n)
        remaining -= n
        block += 1


def media_chunks(rec: SimRecording, chunk_size: int) -> Iterator[bytes]:
    """The body of `rec` in pieces of at most `chunk_size` bytes, generated as consumed."""
    if rec.size_bytes <= STREAMED_ABOVE_BYTES:
        data = memoryview(_small_media_bytes(rec))
        for pos in range(0, len(data), chunk_size):
            yield bytes(data[pos : pos + chunk_size])
        return
    carry = b""
    for block in _large_media_blocks(rec):
        buf = carry + block if carry else block
        view = memoryview(buf)
        pos = 0
        while len(buf) - pos >= chunk_size:
            yield bytes(view[pos : pos + chunk_size])
            pos += chunk_size
        carry = bytes(view[pos:])
    if carry:
        yield carry


def media_bytes(rec: SimRecording) -> bytes:
    """The exact body served for `rec`; non-repeating, so a misplaced byte range cannot pass."""
    if rec.size_bytes <= STREAMED_ABOVE_BYTES:
        return _small_media_bytes(rec)
    return b"".join(_large_media_blocks(rec))


def _sid(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256(":".join(parts).encode()).hexdigest()[:32]


def demo_recordings(business_id: str, n: int) -> list[SimRecording]:
    """Deterministic recordings so a restarted `callrec dev` sees the same calls again."""
    recs = []
    for i in range(n):
        recs.append(
            SimRecording(
                business_id=business_id,
                call_sid=_sid("CA", business_id, str(i), "call"),
                recording_sid=_sid("RE", business_id, str(i), "recording"),
                # Varied sizes and lengths make the demo page look like real traffic.
                size_bytes=(48 + 16 * (i % 5)) * 1024,
                duration_s=15 + 7 * (i % 9),
            )
        )
    return recs
