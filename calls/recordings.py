"""Recordings as records of their own: every RecordingSid of a call (and of the
conferences it joined), with its status, duration, channels, source, start time and
error code.

Where each one's state lives follows the slot member that downloads it: a call's
primary recording (the first of its own to complete) is the call SID, its state in the
call's hash, stored as ``<call_sid>.mp3``; any other recording is its own SID, its state
in its own record (``rec_call:{b}:<recording_sid>``), stored as ``<recording_sid>.mp3``.
The Lua scripts (``lua/recording_status.lua``, ``conference_recording.lua``,
``conference_status.lua``) write them; this module reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from calls import keys
from calls.errors import NotFound
from calls.redis_client import RedisClient, RedisPipeline
from calls.redis_values import text, text_map, texts
from semaphore.scripts import plain, register

if TYPE_CHECKING:
    from calls.registry import Call

# Twilio's recording error codes a user can understand, as words.
ERROR_WORDS = {"16101": "too short", "16102": "silent"}


@dataclass(frozen=True, slots=True)
class RecordingMeta:
    """What a callback (or a listing) says about a recording; "" when it says nothing."""

    duration: str = ""
    channels: str = ""
    source: str = ""
    start_ms: str = ""
    error_code: str = ""

    def args(self) -> list[str]:
        return [self.channels, self.source, self.start_ms, self.error_code]


@dataclass(frozen=True, slots=True)
class RecordingUpdate:
    state: str  # of the slot member after the callback
    member: str  # the slot member: the call SID for a primary, else the recording SID


def parse_update(raw: object) -> RecordingUpdate:
    body = json.loads(text(raw))
    if "error" in body:
        raise NotFound(f"{body['error']}: no conference-status callback registered it")
    return RecordingUpdate(str(body["state"]), str(body["member"]))


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isascii() and value.isdigit() else None


def iso_ms(ms: str | None) -> str | None:
    if not ms:
        return None
    moment = datetime.fromtimestamp(int(float(ms)) / 1000, UTC)
    return moment.isoformat().replace("+00:00", "Z")


def why_none(fields: Mapping[str, str], state: str) -> str | None:
    """Why there is nothing to play, in words: erased, too short, silent..."""
    if state == "erased":
        return "erased"
    code = fields.get("error_code", "")
    if code in ERROR_WORDS:
        return ERROR_WORDS[code]
    twilio = fields.get("rec_twilio")
    if twilio == "absent":
        return "no recording at Twilio"
    if twilio == "failed" or state == "failed":
        return fields.get("reason") or "recording failed"
    return None


@dataclass(frozen=True, slots=True)
class Recording:
    """One recording as a call lists it: its record, and its slot member's state."""

    fields: Mapping[str, str]  # its own record
    member: str
    state: str
    twilio_copy: str

    @property
    def sid(self) -> str:
        return self.fields["recording_sid"]

    @property
    def completed(self) -> bool:
        return self.fields.get("rec_twilio") == "completed"

    def as_json(self) -> dict[str, object]:
        f = self.fields
        return {
            "recording_sid": self.sid,
            "status": self.state,
            "duration": _int(f.get("rec_duration")),
            "channels": _int(f.get("channels")),
            "source": f.get("source") or None,
            "error_code": _int(f.get("error_code")),
            "why": why_none(f, self.state),
            "started_at": iso_ms(f.get("rec_start_ms")),
            "conference_sid": f.get("conference_sid") or None,
            "primary": self.member != self.sid,
            "twilio_copy": self.twilio_copy,
        }


def _view(call: Call, fields: Mapping[str, str]) -> Recording:
    rsid = fields["recording_sid"]
    member = call.sid if call.fields.get("rec_sid") == rsid else rsid
    # A primary's state is the call's; any other recording's is in its own record.
    held = call.fields if member == call.sid else fields
    state = held.get("state", "none")
    # The tombstone of an erased record is its state; its record lost the metadata.
    return Recording(fields, member, state, held.get("twilio_copy", "kept"))


class RecordingBook:
    """Reads and writes recordings beyond the call's own hash: conferences, and every
    recording a call lists."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._conference_status = plain(redis, "calls", "conference_status.lua")
        self._conference_recording = register(redis, "calls", "conference_recording.lua")

    async def apply_conference_status(
        self, b: str, conference_sid: str, call_sid: str, event: str, *, now_ms: int
    ) -> bool:
        cf = conference_sid
        raw = await self._conference_status(
            keys=[
                keys.conf(b, cf),
                keys.conf_calls(b, cf),
                keys.call_confs(b, call_sid) if call_sid else keys.conf(b, cf),
                keys.call(b, call_sid) if call_sid else keys.conf(b, cf),
                keys.calls_by_time(b),
            ],
            args=[cf, call_sid, event, now_ms],
        )
        return bool(json.loads(text(raw))["joined"])

    async def queue_conference_recording(
        self,
        pipe: RedisPipeline,
        b: str,
        conference_sid: str,
        *,
        recording_sid: str,
        twilio_status: str,
        meta: RecordingMeta,
        now_ms: int,
    ) -> None:
        """:meth:`apply_conference_recording` queued on ``pipe`` (a backfill's page)."""
        await self._conference_recording(
            keys=self._conference_keys(b, conference_sid, recording_sid),
            args=self._conference_args(conference_sid, recording_sid, twilio_status, meta, now_ms),
            client=pipe,
        )

    @staticmethod
    def _conference_keys(b: str, conference_sid: str, recording_sid: str) -> list[str]:
        return [
            keys.conf(b, conference_sid),
            keys.call(b, recording_sid),
            keys.conf_recs(b, conference_sid),
            keys.status_stream(b),
            keys.pending(b),
            keys.erased(b),
        ]

    @staticmethod
    def _conference_args(
        conference_sid: str,
        recording_sid: str,
        twilio_status: str,
        meta: RecordingMeta,
        now_ms: int,
    ) -> list[str | int]:
        return [
            conference_sid,
            recording_sid,
            twilio_status,
            meta.duration,
            now_ms,
            keys.STATUS_STREAM_MAXLEN,
            *meta.args(),
        ]

    async def apply_conference_recording(
        self,
        b: str,
        conference_sid: str,
        *,
        recording_sid: str,
        twilio_status: str,
        meta: RecordingMeta,
        now_ms: int,
    ) -> RecordingUpdate:
        raw = await self._conference_recording(
            keys=self._conference_keys(b, conference_sid, recording_sid),
            args=self._conference_args(conference_sid, recording_sid, twilio_status, meta, now_ms),
        )
        return parse_update(raw)

    async def recordings_of(self, calls: Sequence[Call]) -> dict[str, list[Recording]]:
        """Every recording of each call: its own by start time, then its conferences'."""
        if not calls:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.zrange(keys.call_recs(call.business_id, call.sid), 0, -1)
                pipe.smembers(keys.call_confs(call.business_id, call.sid))
            rows = await pipe.execute()
        own = {c.sid: texts(rows[2 * i]) for i, c in enumerate(calls)}
        confs = {c.sid: sorted(texts(rows[2 * i + 1])) for i, c in enumerate(calls)}
        conf_recs: dict[str, list[str]] = {}
        wanted = sorted({(c.business_id, cf) for c in calls for cf in confs[c.sid]})
        if wanted:
            async with self._redis.pipeline(transaction=False) as pipe:
                for b, cf in wanted:
                    pipe.zrange(keys.conf_recs(b, cf), 0, -1)
                found = await pipe.execute()
            conf_recs = {cf: texts(r) for (_, cf), r in zip(wanted, found, strict=True)}
        listed = {
            c.sid: own[c.sid] + [r for cf in confs[c.sid] for r in conf_recs.get(cf, [])]
            for c in calls
        }
        records = await self._records(calls, listed)
        out: dict[str, list[Recording]] = {}
        for call in calls:
            views = []
            for rsid in listed[call.sid]:
                fields = records.get((call.business_id, rsid))
                if fields:
                    views.append(_view(call, fields))
            out[call.sid] = views
        return out

    async def _records(
        self, calls: Sequence[Call], listed: Mapping[str, list[str]]
    ) -> dict[tuple[str, str], dict[str, str]]:
        pairs = sorted({(c.business_id, r) for c in calls for r in listed[c.sid]})
        if not pairs:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for b, rsid in pairs:
                pipe.hgetall(keys.call(b, rsid))
            rows: list[Any] = await pipe.execute()
        return {pair: text_map(row) for pair, row in zip(pairs, rows, strict=True) if row}

    async def find(self, call: Call, recording_sid: str) -> Recording | None:
        """``recording_sid`` as ``call`` lists it; None when the call does not list it."""
        views = (await self.recordings_of([call]))[call.sid]
        return next((v for v in views if v.sid == recording_sid), None)

    async def conference_recording(self, call: Call) -> Recording | None:
        """What a call with no recording of its own plays: its conferences' first
        completed recording (or the first at all, to report its state)."""
        views = [
            v
            for v in (await self.recordings_of([call]))[call.sid]
            if v.fields.get("conference_sid")
        ]
        completed = [v for v in views if v.completed or v.state == "ready"]
        pick = completed or views
        return pick[0] if pick else None
