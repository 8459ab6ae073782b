"""Importing the calls and recordings a business made before callrec existed.

Twilio's account-level lists are paged in order (the calls, once per number filter, then
the recordings). After each page the registry writes, the counters and the cursor (the
next page's URI) go to Redis in one transaction, so a run killed at any point resumes at
the first page it had not finished, and a page done twice adds nothing: every write is
idempotent, and a call or recording counts as imported only when it was not known
before. A finished run clears its cursor; the next run lists everything again and
imports nothing it already has.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from redis.typing import EncodableT, FieldT

from calls import keys, sids
from calls.errors import BadRequest
from calls.recordings import RecordingMeta, parse_update
from calls.redis_client import RedisClient
from calls.redis_values import text_map
from calls.registry import CallRegistry
from lifecycle import backlog
from lifecycle.twilio_rest import Page, TwilioRest

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 1000
CALL_FIELDS = {
    "parent_call_sid": "parent_call_sid",
    "from": "from",
    "to": "to",
    "direction": "direction",
    "status": "status",
    "duration": "duration",
}


@dataclass(frozen=True, slots=True)
class BackfillRequest:
    business_id: str
    since: date | None = None
    until: date | None = None
    numbers: tuple[str, ...] = ()
    download: bool = False
    page_size: int = DEFAULT_PAGE_SIZE

    def __post_init__(self) -> None:
        sids.business_id(self.business_id)
        if self.since and self.until and self.since > self.until:
            raise BadRequest(f"since ({self.since}) is after until ({self.until})")
        for number in self.numbers:
            if not (number.startswith("+") and number[1:].isdigit() and 2 <= len(number) <= 16):
                raise BadRequest(f"number {number!r} is not an E.164 phone number (+15551234567)")
        if not 1 <= self.page_size <= 1000:
            raise BadRequest("page size must be between 1 and 1000")

    @property
    def identity(self) -> str:
        """Which run a stored cursor belongs to: the same range and numbers resume it."""
        spec = [str(self.since or ""), str(self.until or ""), sorted(self.numbers)]
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]

    def phases(self) -> list[tuple[str, str, dict[str, str]]]:
        """(resource, item key, filters) of every list the run pages through, in order."""
        window: dict[str, str] = {}
        if self.since:
            window["StartTime>"] = self.since.isoformat()
        if self.until:
            window["StartTime<"] = self.until.isoformat()
        calls: list[tuple[str, str, dict[str, str]]] = []
        if self.numbers:
            for number in sorted(self.numbers):
                calls.append(("Calls.json", "calls", {**window, "To": number}))
                calls.append(("Calls.json", "calls", {**window, "From": number}))
        else:
            calls.append(("Calls.json", "calls", window))
        created: dict[str, str] = {}
        if self.since:
            created["DateCreated>"] = self.since.isoformat()
        if self.until:
            # A call on the last day may end (and its recording be created) after midnight.
            created["DateCreated<"] = (self.until + timedelta(days=1)).isoformat()
        return [*calls, ("Recordings.json", "recordings", created)]


@dataclass(slots=True)
class Progress:
    pages: int = 0
    calls_seen: int = 0
    calls_imported: int = 0
    recordings_seen: int = 0
    recordings_imported: int = 0
    resumed: bool = False
    downloads_queued: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"imported {self.calls_imported} calls and {self.recordings_imported} recordings "
            f"({self.calls_seen} calls and {self.recordings_seen} recordings listed, "
            f"{self.pages} pages{', resumed' if self.resumed else ''}"
            + (f", {self.downloads_queued} downloads queued" if self.downloads_queued else "")
            + ")"
        )


OnPage = Callable[[Progress], None]
AfterPage = Callable[[Progress], Awaitable[None]]


def _ms(stamp: Any) -> int | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return int(parsedate_to_datetime(stamp).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str:
    return "" if value is None else str(value)[:64]


def _digits(value: Any) -> str:
    raw = _str(value)
    return raw if raw.isascii() and raw.isdigit() and len(raw) <= 9 else ""


class Backfill:
    def __init__(
        self,
        redis: RedisClient,
        registry: CallRegistry,
        twilio: TwilioRest,
        request: BackfillRequest,
    ) -> None:
        self._redis = redis
        self._registry = registry
        self._twilio = twilio
        self._req = request
        self._b = request.business_id
        self._cursor_key = keys.backfill(self._b)

    async def _resume_point(self, progress: Progress) -> tuple[int, str | None]:
        saved = text_map(await self._redis.hgetall(self._cursor_key))
        if saved.get("identity") != self._req.identity:
            await self._redis.delete(self._cursor_key)
            await self._redis.hset(self._cursor_key, mapping={"identity": self._req.identity})
            return 0, None
        progress.resumed = True
        progress.pages = int(saved.get("pages", 0))
        progress.calls_seen = int(saved.get("calls_seen", 0))
        progress.calls_imported = int(saved.get("calls_imported", 0))
        progress.recordings_seen = int(saved.get("recordings_seen", 0))
        progress.recordings_imported = int(saved.get("recordings_imported", 0))
        progress.downloads_queued = int(saved.get("downloads_queued", 0))
        return int(saved.get("phase", 0)), saved.get("next") or None

    async def run(
        self, on_page: OnPage | None = None, *, after_page: AfterPage | None = None
    ) -> Progress:
        progress = Progress()
        await self._registry.note_business(self._b)
        phase_index, resume_uri = await self._resume_point(progress)
        phases = self._req.phases()
        for index in range(phase_index, len(phases)):
            resource, key, filters = phases[index]
            start = resume_uri if index == phase_index and resume_uri else None
            uri = start or self._twilio.first_page_uri(resource, filters, self._req.page_size)
            async for _this, page in self._twilio.pages(uri, key):
                if key == "calls":
                    await self._import_calls(page, index, progress)
                else:
                    await self._import_recordings(page, index, progress)
                if on_page is not None:
                    on_page(progress)
                if after_page is not None:
                    await after_page(progress)
        await self._redis.delete(self._cursor_key)
        log.info("BACKFILL_DONE business_id=%s %s", self._b, progress.summary())
        return progress

    def _cursor_fields(
        self, phase: int, page: Page, progress: Progress
    ) -> dict[FieldT, EncodableT]:
        # The next page of this phase, or the start of the next phase.
        next_phase, next_uri = (phase, page.next_uri) if page.next_uri else (phase + 1, "")
        return {
            "phase": next_phase,
            "next": next_uri or "",
            "pages": progress.pages,
            "calls_seen": progress.calls_seen,
            "calls_imported": progress.calls_imported,
            "recordings_seen": progress.recordings_seen,
            "recordings_imported": progress.recordings_imported,
            "downloads_queued": progress.downloads_queued,
        }

    async def _known(self, hashes: Sequence[str]) -> list[bool]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in hashes:
                pipe.exists(name)
            return [bool(n) for n in await pipe.execute()]

    async def _import_calls(self, page: Page, phase: int, progress: Progress) -> None:
        rows: list[tuple[str, int, dict[str, str]]] = []
        for item in page.items:
            sid = _str(item.get("sid"))
            started = _ms(item.get("start_time")) or _ms(item.get("date_created"))
            if not sids.CALL_SID.fullmatch(sid) or started is None:
                progress.skipped["malformed call"] = progress.skipped.get("malformed call", 0) + 1
                continue
            fields = {name: _str(item.get(twilio)) for twilio, name in CALL_FIELDS.items()}
            if fields["parent_call_sid"] and not sids.CALL_SID.fullmatch(fields["parent_call_sid"]):
                fields["parent_call_sid"] = ""
            rows.append((sid, started, fields))
        known = await self._known([keys.call(self._b, sid) for sid, _, _ in rows])
        progress.pages += 1
        progress.calls_seen += len(page.items)
        progress.calls_imported += known.count(False)
        async with self._redis.pipeline(transaction=True) as pipe:
            for sid, started, fields in rows:
                # Sequence 0: a status callback callrec received itself is newer and wins.
                await self._registry.queue_call_status(
                    pipe, self._b, sid, sequence=0, started_at_ms=started, fields=fields
                )
            pipe.hset(self._cursor_key, mapping=self._cursor_fields(phase, page, progress))
            await pipe.execute()

    async def _import_recordings(self, page: Page, phase: int, progress: Progress) -> None:
        # Oldest first within the page: a call's primary is the first of its recordings
        # to complete (Twilio lists newest first).
        items = sorted(page.items, key=lambda i: _ms(i.get("start_time")) or 0)
        own: list[dict[str, Any]] = []
        conference: list[dict[str, Any]] = []
        for item in items:
            call_sid, rec_sid = _str(item.get("call_sid")), _str(item.get("sid"))
            conf_sid = _str(item.get("conference_sid"))
            if item.get("status", "completed") != "completed":
                continue
            if not sids.RECORDING_SID.fullmatch(rec_sid):
                continue
            if sids.CALL_SID.fullmatch(call_sid):
                own.append(item)
            elif sids.CONFERENCE_SID.fullmatch(conf_sid):
                conference.append(item)
        # Only this business's: with a shared account the list holds every business's
        # recordings; the number filter chose the calls, its webhooks the conferences.
        ours = await self._known(
            [keys.call(self._b, _str(i["call_sid"])) for i in own]
            + [keys.conf(self._b, _str(i["conference_sid"])) for i in conference]
        )
        mine = [item for item, known in zip([*own, *conference], ours, strict=True) if known]
        unknown = await self._registry.recordings_unknown(
            self._b, [(_str(i.get("call_sid")), _str(i["sid"])) for i in mine]
        )
        new = {rsid for _, rsid in unknown}
        progress.pages += 1
        progress.recordings_seen += len(mine)
        progress.recordings_imported += len(new)
        now_ms = int(time.time() * 1000)
        own_ids = {id(item) for item in own}
        async with self._redis.pipeline(transaction=True) as pipe:
            for item in mine:
                meta = RecordingMeta(
                    duration=_digits(item.get("duration")),
                    channels=_digits(item.get("channels")),
                    source=_str(item.get("source")) if _str(item.get("source")).isalpha() else "",
                    start_ms=str(_ms(item.get("start_time")) or ""),
                )
                if id(item) in own_ids:
                    await self._registry.queue_recording_status(
                        pipe,
                        self._b,
                        _str(item["call_sid"]),
                        recording_sid=_str(item["sid"]),
                        twilio_status="completed",
                        meta=meta,
                        now_ms=now_ms,
                    )
                else:
                    await self._registry.recordings.queue_conference_recording(
                        pipe,
                        self._b,
                        _str(item["conference_sid"]),
                        recording_sid=_str(item["sid"]),
                        twilio_status="completed",
                        meta=meta,
                        now_ms=now_ms,
                    )
            pipe.hset(self._cursor_key, mapping=self._cursor_fields(phase, page, progress))
            results = await pipe.execute()
        if self._req.download:
            # The slot member each script chose (the call for a primary): what nobody has
            # asked for yet goes to the backlog. (A crash right here leaves them available,
            # to be fetched on a click: never fetched twice, never lost.)
            wanted = []
            for item, raw in zip(mine, results, strict=False):
                update = parse_update(raw)
                if _str(item["sid"]) in new and update.state == "available":
                    wanted.append(update.member)
            if wanted:
                async with self._redis.pipeline(transaction=True) as pipe:
                    backlog.add(pipe, self._b, wanted)
                    pipe.hincrby(self._cursor_key, "downloads_queued", len(wanted))
                    await pipe.execute()
                # The feeder's index is global (another slot on a cluster): after the MULTI.
                await backlog.announce(self._redis, self._b)
                progress.downloads_queued += len(wanted)
