"""The call registry in Redis: one hash per call, a sorted set for newest-first paging.

Webhooks write it (through two Lua scripts, so redelivered and reordered callbacks are
harmless); the API reads it. A recording's ``state`` field changes only through the Lua
``set_state`` of ``semaphore/lua/prelude.lua``: here (recording status, mark ready) and
in the slot scripts.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from calls import keys, sids
from calls.errors import BadRequest
from calls.recordings import (
    RecordingBook,
    RecordingMeta,
    RecordingUpdate,
    parse_update,
    why_none,
)
from calls.redis_client import RedisClient, RedisPipeline
from calls.redis_values import text, text_map
from semaphore.scripts import plain, register

PENDING_STATES = ("queued", "processing")
# Twilio's RecordingStatus words that mean there is no recording to fetch.
TWILIO_UNAVAILABLE = ("absent", "failed")
KNOWN_BUSINESSES_CACHED = 100_000


def twilio_delete_entry(b: str, recording_sid: str, member: str) -> str:
    """A member of ``keys.TWILIO_DELETES`` (read back by ``lifecycle.twilio_deletes``)."""
    return f"{b}|{recording_sid}|{member}"


@dataclass(frozen=True, slots=True)
class Call:
    business_id: str
    fields: Mapping[str, str]

    @property
    def sid(self) -> str:
        return self.fields["call_sid"]

    @property
    def member(self) -> str:
        """The slot member this hash keeps the state of: the call SID (its primary
        recording), or a recording's own SID."""
        return self.fields.get("member") or self.fields["call_sid"]

    @property
    def parent_sid(self) -> str | None:
        return self.fields.get("parent_call_sid") or None

    @property
    def state(self) -> str:
        return self.fields.get("state", "none")

    @property
    def twilio_recording(self) -> str | None:
        """Twilio's RecordingStatus for this call, None when no callback said anything."""
        return self.fields.get("rec_twilio")

    @property
    def twilio_unavailable(self) -> bool:
        """Twilio said there is no recording to fetch (absent, or failed at Twilio)."""
        return self.twilio_recording in TWILIO_UNAVAILABLE

    @property
    def has_own_recording(self) -> bool:
        return self.twilio_recording in ("completed", "in-progress") or bool(
            self.fields.get("rec_sid")
        )

    @property
    def is_finished(self) -> bool:
        return self.fields.get("status") in ("completed", "busy", "no-answer", "failed", "canceled")

    def as_json(self) -> dict[str, object]:
        f = self.fields
        return {
            "call_sid": self.sid,
            "parent_call_sid": self.parent_sid,
            "from": f.get("from"),
            "to": f.get("to"),
            "direction": f.get("direction"),
            "status": f.get("status"),
            "duration": _int_or_none(f.get("duration")),
            "started_at": _iso(f.get("started_at")),
            "recording": {
                "status": self.state,
                "duration": _int_or_none(f.get("rec_duration")),
                "recording_sid": f.get("rec_sid") or None,
                "channels": _int_or_none(f.get("channels")),
                "error_code": _int_or_none(f.get("error_code")),
                "source": f.get("source") or None,
                # Why there is nothing to play, in words (erased, too short, silent...).
                "why": why_none(f, self.state),
                # Where Twilio's copy is: kept, deleting (queued), deleted.
                "twilio_copy": f.get("twilio_copy", "kept"),
            },
        }


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _iso(ms: str | None) -> str | None:
    from datetime import UTC, datetime

    if not ms:
        return None
    return datetime.fromtimestamp(int(float(ms)) / 1000, UTC).isoformat().replace("+00:00", "Z")


def encode_cursor(score: float, sid: str) -> str:
    return base64.urlsafe_b64encode(f"{int(score)}:{sid}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """(started_at ms, call sid) of the last call of the previous page."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        score, _, sid = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        value = int(score)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("before is not a cursor this API returned") from None
    # Scores are milliseconds; a number Redis cannot read as a float is no cursor of ours.
    if not 0 <= value < 2**53 or not sids.CALL_SID.fullmatch(sid):
        raise BadRequest("before is not a cursor this API returned")
    return value, sid


class CallRegistry:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._call_status = plain(redis, "calls", "call_status.lua")
        self._recording_status = register(redis, "calls", "recording_status.lua")
        self._mark_ready = register(redis, "calls", "mark_ready.lua")
        self._page = plain(redis, "calls", "page.lua")
        self._erase = register(redis, "calls", "erase.lua")
        self.recordings = RecordingBook(redis)
        self._known_businesses: set[str] = set()

    async def apply_call_status(
        self, b: str, sid: str, *, sequence: int, started_at_ms: int, fields: Mapping[str, str]
    ) -> bool:
        await self.note_business(b)
        argv: list[str | int] = [sid, sequence, started_at_ms]
        for name, value in fields.items():
            argv += [name, value]
        applied = await self._call_status(
            keys=[keys.call(b, sid), keys.calls_by_time(b)], args=argv
        )
        return int(applied) == 1

    async def note_business(self, b: str) -> None:
        """Index the business for retention (once per process)."""
        if b not in self._known_businesses:
            await self._redis.sadd(keys.KNOWN_BUSINESSES, b)
            if len(self._known_businesses) >= KNOWN_BUSINESSES_CACHED:
                self._known_businesses.clear()
            self._known_businesses.add(b)

    async def queue_call_status(
        self,
        pipe: RedisPipeline,
        b: str,
        sid: str,
        *,
        sequence: int,
        started_at_ms: int,
        fields: Mapping[str, str],
    ) -> None:
        """:meth:`apply_call_status` queued on ``pipe`` (a backfill writes a page at once)."""
        argv: list[str | int] = [sid, sequence, started_at_ms]
        for name, value in fields.items():
            argv += [name, value]
        await self._call_status(
            keys=[keys.call(b, sid), keys.calls_by_time(b)], args=argv, client=pipe
        )

    async def queue_recording_status(
        self,
        pipe: RedisPipeline,
        b: str,
        sid: str,
        *,
        recording_sid: str,
        twilio_status: str,
        meta: RecordingMeta,
        now_ms: int,
    ) -> None:
        """:meth:`apply_recording_status` queued on ``pipe``."""
        await self._recording_status(
            keys=self._recording_keys(b, sid, recording_sid),
            args=self._recording_args(sid, recording_sid, twilio_status, meta, now_ms),
            client=pipe,
        )

    async def recordings_unknown(
        self, b: str, pairs: Sequence[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """The (call_sid, recording_sid) pairs the registry does not hold yet."""
        if not pairs:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for _, recording_sid in pairs:
                pipe.hget(keys.call(b, recording_sid), "rec_twilio")
            held = await pipe.execute()
        return [pair for pair, have in zip(pairs, held, strict=True) if have != b"completed"]

    async def mark_erased(
        self, b: str, member: str, recording_sids: Sequence[str], *, now_ms: int
    ) -> bool:
        """Tombstone ``member`` and its recordings; True when it was erased before."""
        raw = await self._erase(
            keys=[
                keys.call(b, member),
                keys.status_stream(b),
                keys.erased(b),
                keys.queue(b),
                keys.queued(b),
                keys.queued_at(b),
                keys.pending(b),
                *(keys.call(b, rsid) for rsid in recording_sids),
            ],
            args=[member, keys.STATUS_STREAM_MAXLEN, now_ms, *recording_sids],
        )
        return bool(json.loads(raw)["already"])

    async def recording_members(self, call: Call) -> list[tuple[str, list[str]]]:
        """(slot member, its recording SIDs) of every recording stored for ``call``: the
        call itself for its primary (with no recording SID when none is known yet)."""
        primary = call.fields.get("rec_sid")
        members: dict[str, list[str]] = {call.sid: [primary] if primary else []}
        # Its conferences' recordings too: the erased person's voice is in them.
        for rec in (await self.recordings.recordings_of([call]))[call.sid]:
            members.setdefault(rec.member, [])
            if rec.sid not in members[rec.member]:
                members[rec.member].append(rec.sid)
        return list(members.items())

    async def twilio_copy_deleting(self, b: str, member: str, recording_sid: str) -> None:
        """callrec's copy is durable: queue the DELETE of Twilio's, and say so."""
        # Two slots on a cluster (no MULTI across them): the delete is queued first, so a
        # crash in between leaves a delete that runs and says "deleted" on its own.
        await self._redis.zadd(
            keys.TWILIO_DELETES, {twilio_delete_entry(b, recording_sid, member): 0}, nx=True
        )
        await self._redis.hset(keys.call(b, member), "twilio_copy", "deleting")

    async def twilio_copy_deleted(self, b: str, member: str) -> None:
        # Only on a hash that still exists: a call dropped meanwhile is not brought back.
        if await self._redis.hexists(keys.call(b, member), "state"):
            await self._redis.hset(keys.call(b, member), "twilio_copy", "deleted")

    async def drop_calls(self, b: str, sids: Sequence[str]) -> None:
        """Forget these calls (call retention); their tombstones stay, so a late webhook
        may register the call again but never fetches an erased recording."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.calls_by_time(b), *sids)
            pipe.delete(*(keys.call(b, sid) for sid in sids))
            await pipe.execute()

    async def erased(self, b: str, sids: Sequence[str]) -> list[bool]:
        """Which of ``sids`` (slot members or recording SIDs) are tombstoned."""
        if not sids:
            return []
        flags = await self._redis.smismember(keys.erased(b), list(sids))
        return [bool(f) for f in flags]

    async def is_erased(self, b: str, *sids: str) -> bool:
        return any(await self.erased(b, [s for s in sids if s]))

    async def apply_recording_status(
        self,
        b: str,
        sid: str,
        *,
        recording_sid: str,
        twilio_status: str,
        duration: str = "",
        now_ms: int,
        meta: RecordingMeta | None = None,
    ) -> RecordingUpdate:
        """A recording status callback of a call's recording (recording_status.lua)."""
        await self.note_business(b)
        meta = meta or RecordingMeta(duration=duration)
        raw = await self._recording_status(
            keys=self._recording_keys(b, sid, recording_sid),
            args=self._recording_args(sid, recording_sid, twilio_status, meta, now_ms),
        )
        return parse_update(raw)

    @staticmethod
    def _recording_keys(b: str, sid: str, recording_sid: str) -> list[str]:
        return [
            keys.call(b, sid),
            keys.calls_by_time(b),
            keys.status_stream(b),
            keys.pending(b),
            keys.call(b, recording_sid) if recording_sid else keys.call(b, sid),
            keys.call_recs(b, sid),
            keys.erased(b),
        ]

    @staticmethod
    def _recording_args(
        sid: str, recording_sid: str, twilio_status: str, meta: RecordingMeta, now_ms: int
    ) -> list[str | int]:
        return [
            sid,
            recording_sid,
            twilio_status,
            meta.duration,
            now_ms,
            keys.STATUS_STREAM_MAXLEN,
            *meta.args(),
        ]

    async def get(self, b: str, sid: str) -> Call | None:
        raw = await self._redis.hgetall(keys.call(b, sid))
        if not raw:
            return None
        return Call(b, text_map(raw))

    async def get_many(self, b: str, sids: Sequence[str]) -> list[Call]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hgetall(keys.call(b, sid))
            rows = await pipe.execute()
        return [Call(b, text_map(row)) for row in rows if row]

    async def mark_ready(self, b: str, sid: str) -> None:
        """The recording is in storage; say so once (status watchers get one event,
        however many callers find the file at once)."""
        await self._mark_ready(
            keys=[keys.call(b, sid), keys.status_stream(b), keys.pending(b)],
            args=[sid, keys.STATUS_STREAM_MAXLEN],
        )

    async def mark_no_recording(self, b: str, sid: str) -> None:
        """Twilio lists no recording for the call: say so, and stop offering it."""
        await self._redis.hset(
            keys.call(b, sid),
            mapping={"rec_twilio": "absent", "reason": "no recording at Twilio"},
        )

    async def set_account(self, b: str, sid: str, account_sid: str) -> None:
        """The Twilio account the call's webhooks came from (its media is filed there)."""
        await self._redis.hset(keys.call(b, sid), "account_sid", account_sid)

    async def set_recording_sid(self, b: str, sid: str, recording_sid: str) -> None:
        await self._redis.hset(keys.call(b, sid), "rec_sid", recording_sid)

    async def note_attempt(self, b: str, sid: str, reason: str) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(keys.call(b, sid), "attempts", 1)
            pipe.hset(keys.call(b, sid), "reason", reason)
            attempts, _ = await pipe.execute()
        return int(attempts)

    async def reset_attempts(self, b: str, sid: str) -> None:
        await self._redis.hdel(keys.call(b, sid), "attempts", "reason")

    async def page(
        self, b: str, *, limit: int, before: str | None
    ) -> tuple[list[Call], str | None]:
        """Newest first. The cursor is (started_at, sid) of the last call returned: unique,
        so however many calls share a second none is skipped or repeated, and calls added
        while a client pages never shift what it sees next."""
        score, after_sid = decode_cursor(before) if before else (None, "")
        rows: list[Any] = await self._page(
            keys=[keys.calls_by_time(b)],
            args=[limit + 1, "" if score is None else score, after_sid],
        )
        picked = [(text(rows[i]), int(float(text(rows[i + 1])))) for i in range(0, len(rows), 2)]
        more = len(picked) > limit
        picked = picked[:limit]
        calls = await self.get_many(b, [sid for sid, _ in picked])
        next_cursor = encode_cursor(picked[-1][1], picked[-1][0]) if more and picked else None
        return calls, next_cursor
