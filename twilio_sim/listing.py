"""Twilio's account-level lists (Calls.json, Recordings.json: newest first, date filters,
paging through ``next_page_uri``) and DELETE of a recording.

Paging uses an opaque ``PageToken`` naming the last item of the previous page (its time
and SID), as Twilio's does, so items added while a client pages never shift a page.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from twilio_sim.errors import fault_response, not_found, twilio_error
from twilio_sim.history import CallLog, SimCall
from twilio_sim.models import Fault, SimRecording
from twilio_sim.resources import API_VERSION, recording_json
from twilio_sim.state import MediaSettings, SimState

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class BadFilter(ValueError):
    pass


class DeletionLog:
    """Every DELETE of a recording that existed, with an optional hook run just before the
    recording goes (tests use it to look at callrec's copy at that very moment)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deletes: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._failures: deque[Fault] = deque()
        self.on_delete: Callable[[SimRecording], None] | None = None

    def fail_next(self, faults: list[Fault]) -> None:
        with self._lock:
            self._failures.extend(faults)

    def next_failure(self) -> Fault | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def record(self, recording_sid: str, existed: bool) -> None:
        with self._lock:
            (self._deletes if existed else self._refused)[recording_sid] += 1

    def deletes(self, recording_sid: str) -> int:
        with self._lock:
            return self._deletes[recording_sid]

    def total(self) -> int:
        with self._lock:
            return sum(self._deletes.values())

    def not_found(self, recording_sid: str) -> int:
        """DELETEs answered 404 (the recording was gone already)."""
        with self._lock:
            return self._refused[recording_sid]


@dataclass(frozen=True)
class _Window:
    after: datetime | None  # inclusive
    before: datetime | None  # exclusive

    def __contains__(self, moment: datetime) -> bool:
        return (self.after is None or moment >= self.after) and (
            self.before is None or moment < self.before
        )


def _moment(raw: str, name: str) -> tuple[datetime, bool]:
    """(the instant, whether it was a whole day)."""
    try:
        return datetime.combine(date.fromisoformat(raw), datetime.min.time(), UTC), True
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadFilter(f"Invalid {name}: {raw!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)), False


def _window(request: Request, field: str) -> _Window:
    # Twilio's inequality filters are the parameter names "Field>" and "Field<", so the
    # query string reads "Field>=2024-01-01".
    after = before = None
    q = request.query_params
    if field in q:
        day, _ = _moment(q[field], field)
        after, before = day, day + timedelta(days=1)
    if f"{field}>" in q:
        after, _ = _moment(q[f"{field}>"], f"{field}>")
    if f"{field}<" in q:
        moment, whole_day = _moment(q[f"{field}<"], f"{field}<")
        # "on or before" a date includes that whole day.
        before = moment + (timedelta(days=1) if whole_day else timedelta(microseconds=1))
    return _Window(after, before)


def _page_size(request: Request) -> int:
    raw = request.query_params.get("PageSize", str(DEFAULT_PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise BadFilter(f"PageSize must be between 1 and {MAX_PAGE_SIZE}")
    return int(raw)


def _token(moment: datetime, sid: str) -> str:
    return f"PT{int(moment.timestamp() * 1_000_000)}_{sid}"


def _after_token(raw: str | None) -> tuple[int, str] | None:
    if not raw:
        return None
    body = raw.removeprefix("PT")
    micros, _, sid = body.partition("_")
    if not micros.isdigit() or not sid:
        raise BadFilter("Invalid PageToken")
    return int(micros), sid


def _page(
    request: Request,
    items: Sequence[tuple[datetime, str, Callable[[], dict[str, Any]]]],
    *,
    key: str,
    uri: str,
) -> dict[str, Any]:
    size = _page_size(request)
    after = _after_token(request.query_params.get("PageToken"))
    ordered = sorted(items, key=lambda it: (it[0], it[1]), reverse=True)
    if after is not None:
        ordered = [it for it in ordered if (int(it[0].timestamp() * 1_000_000), it[1]) < after]
    chosen = ordered[:size]
    page = int(request.query_params.get("Page", "0") or 0)
    paging = ("PageSize", "Page", "PageToken")
    filters = [(k, v) for k, v in request.query_params.multi_items() if k not in paging]

    def link(*extra: tuple[str, str | int]) -> str:
        return f"{uri}?{urlencode([*filters, ('PageSize', size), *extra])}"

    next_uri = None
    if len(ordered) > size:
        last = chosen[-1]
        next_uri = link(("Page", page + 1), ("PageToken", _token(last[0], last[1])))
    this, first = link(("Page", page)), link(("Page", 0))
    return {
        # Only the page's items are rendered: a 5,000-call account is listed in many pages.
        key: [it[2]() for it in chosen],
        "first_page_uri": first,
        "next_page_uri": next_uri,
        "previous_page_uri": None,
        "page": page,
        "page_size": size,
        "start": page * size,
        "end": page * size + max(len(chosen) - 1, 0),
        "uri": this,
    }


def call_json(call: SimCall, *, account_sid: str) -> dict[str, Any]:
    end = call.start_time + timedelta(seconds=call.duration_s)
    return {
        "sid": call.call_sid,
        "account_sid": account_sid,
        "parent_call_sid": call.parent_call_sid or None,
        "from": call.from_,
        "to": call.to,
        "direction": call.direction,
        "status": call.status,
        "start_time": format_datetime(call.start_time),
        "end_time": format_datetime(end),
        "date_created": format_datetime(call.start_time),
        "date_updated": format_datetime(end),
        # Twilio sends durations as strings.
        "duration": str(call.duration_s),
        "api_version": API_VERSION,
        "uri": f"/{API_VERSION}/Accounts/{account_sid}/Calls/{call.call_sid}.json",
    }


def _base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def account_routes(
    state: SimState,
    calls: CallLog,
    deletions: DeletionLog,
    settings: MediaSettings,
    *,
    account_sid: str,
) -> list[Route]:
    root = f"/{API_VERSION}/Accounts/{account_sid}"

    async def list_calls(request: Request) -> Response:
        if settings.listing_delay_s:
            await anyio.sleep(settings.listing_delay_s)
        try:
            window = _window(request, "StartTime")
            q = request.query_params
            items = [
                (c.start_time, c.call_sid, functools.partial(call_json, c, account_sid=account_sid))
                for c in calls.snapshot()
                if c.start_time in window
                and ("To" not in q or c.to == q["To"])
                and ("From" not in q or c.from_ == q["From"])
                and ("Status" not in q or c.status == q["Status"])
            ]
            return JSONResponse(_page(request, items, key="calls", uri=f"{root}/Calls.json"))
        except BadFilter as exc:
            return twilio_error(400, message=str(exc))

    async def list_recordings(request: Request) -> Response:
        if settings.listing_delay_s:
            await anyio.sleep(settings.listing_delay_s)
        try:
            window = _window(request, "DateCreated")
            q = request.query_params
            base = _base_url(request)
            items = [
                (
                    created,
                    r.recording_sid,
                    functools.partial(
                        recording_json, r, account_sid=account_sid, base_url=base, created=created
                    ),
                )
                for r, created in state.snapshot()
                if created in window
                and ("CallSid" not in q or r.call_sid == q["CallSid"])
                and ("ConferenceSid" not in q or r.conference_sid == q["ConferenceSid"])
            ]
            page = _page(request, items, key="recordings", uri=f"{root}/Recordings.json")
            return JSONResponse(page)
        except BadFilter as exc:
            return twilio_error(400, message=str(exc))

    async def delete_recording(request: Request) -> Response:
        name: str = request.path_params["name"]
        sid = name.removesuffix(".json")
        fault = deletions.next_failure()
        if fault is not None:
            return fault_response(fault, request.url.path)
        rec = state.get(sid)
        if rec is None:
            deletions.record(sid, existed=False)
            return not_found(request.url.path)
        hook = deletions.on_delete
        if hook is not None:
            # In a worker thread: the hook may block (read files, call S3).
            await anyio.to_thread.run_sync(hook, rec)
        state.remove(sid)
        deletions.record(sid, existed=True)
        return Response(status_code=204)

    return [
        Route("/Calls.json", list_calls, methods=["GET"]),
        Route("/Recordings.json", list_recordings, methods=["GET"]),
        Route("/Recordings/{name}", delete_recording, methods=["DELETE"]),
    ]
