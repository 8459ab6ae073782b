"""An account's past calls: what Twilio's account-level Calls list returns, and a cheap
generator of a large history (thousands of calls, each with a recording) for backfills."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from twilio_sim.models import DEFAULT_FROM, DEFAULT_TO, SimRecording


@dataclass(frozen=True)
class SimCall:
    business_id: str
    call_sid: str
    start_time: datetime
    from_: str = DEFAULT_FROM
    to: str = DEFAULT_TO
    direction: str = "inbound"
    status: str = "completed"
    duration_s: int = 30
    parent_call_sid: str = ""


class CallLog:
    """The account's calls, behind their own lock (media never touches them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, SimCall] = {}
        self._listing_requests = 0

    def add_many(self, calls: list[SimCall]) -> None:
        with self._lock:
            for call in calls:
                self._calls[call.call_sid] = call

    def snapshot(self) -> list[SimCall]:
        """Every call; counts as one listing request."""
        with self._lock:
            self._listing_requests += 1
            return list(self._calls.values())

    def listing_requests(self) -> int:
        with self._lock:
            return self._listing_requests

    def reset_counters(self) -> None:
        with self._lock:
            self._listing_requests = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._calls)


def _sid(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256(":".join(parts).encode()).hexdigest()[:32]


def past_calls(
    business_id: str,
    n: int,
    *,
    newest: datetime,
    spacing: timedelta = timedelta(minutes=7),
    numbers: tuple[str, ...] = (DEFAULT_TO,),
    size_bytes: int = 2048,
) -> tuple[list[SimCall], list[SimRecording]]:
    """``n`` finished calls, one every ``spacing`` going back from ``newest``, each with one
    completed recording created when the call ended. Deterministic (same SIDs on every
    run) and small (2 KiB bodies by default), so thousands cost milliseconds. The callrec
    side of each call is ``numbers[i % len(numbers)]``; inbound and outbound alternate."""
    calls: list[SimCall] = []
    recs: list[SimRecording] = []
    for i in range(n):
        start = newest - spacing * i
        ours = numbers[i % len(numbers)]
        other = f"+1444{i:07d}"
        inbound = i % 2 == 0
        duration_s = 20 + i % 40
        call = SimCall(
            business_id=business_id,
            call_sid=_sid("CA", business_id, str(i), "past-call"),
            start_time=start,
            from_=other if inbound else ours,
            to=ours if inbound else other,
            direction="inbound" if inbound else "outbound-api",
            duration_s=duration_s,
        )
        calls.append(call)
        recs.append(
            SimRecording(
                business_id=business_id,
                call_sid=call.call_sid,
                recording_sid=_sid("RE", business_id, str(i), "past-recording"),
                size_bytes=size_bytes,
                duration_s=duration_s - 2,
                created_at=start + timedelta(seconds=duration_s),
            )
        )
    return calls, recs
