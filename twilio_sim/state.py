"""Registry and counters shared by the server thread and the test thread."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from twilio_sim.models import Fault, SimRecording


@dataclass
class MediaSettings:
    """Knobs read on every media request; plain attributes, so tests can flip them live."""

    latency_s: float = 0.0
    chunk_delay_s: float = 0.0
    chunk_size: int = 16 * 1024
    redirect_to_cdn: bool = False
    # While set, media requests are accepted (and counted as in flight) but wait before
    # answering: a test can look at a queue that stays put, then let it move.
    hold: bool = False
    # Added before every account-level listing page: lets a test stop a backfill mid-run.
    listing_delay_s: float = 0.0


class Slot:
    """One in-flight media request; released at most once.

    Handlers release it just before writing the response's last bytes: once the client holds
    the whole response it may look at the counters at once, and must not see itself counted.
    """

    def __init__(self, state: SimState, business_id: str) -> None:
        self._state = state
        self._business_id = business_id
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._state._release(self._business_id)


class SimState:
    """All mutable simulator state behind one lock; every method is a short critical section."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recordings: dict[str, SimRecording] = {}
        self._created: dict[str, datetime] = {}
        self._faults: dict[str, deque[Fault]] = {}
        # A redirected request's body fault travels to the CDN through a one-time ticket.
        self._tickets: dict[str, Fault | None] = {}
        self._media_requests: Counter[str] = Counter()
        self._downloads: Counter[str] = Counter()
        self._completed: Counter[str] = Counter()
        self._inflight: Counter[str] = Counter()
        self._max_inflight: Counter[str] = Counter()
        self._order: dict[str, list[str]] = {}
        self._listing_requests = 0
        self._held: deque[int] = deque()
        self._hold_tickets = 0
        # time.monotonic() of each call's first media request: bench measures queueing delay.
        self._first_request_at: dict[str, float] = {}

    def add(self, rec: SimRecording) -> None:
        with self._lock:
            self._recordings[rec.recording_sid] = rec
            self._created.setdefault(rec.recording_sid, rec.created_at or datetime.now(UTC))

    def add_many(self, recs: list[SimRecording]) -> None:
        with self._lock:
            for rec in recs:
                self._recordings[rec.recording_sid] = rec
                self._created.setdefault(rec.recording_sid, rec.created_at or datetime.now(UTC))

    def remove(self, recording_sid: str) -> SimRecording | None:
        """Twilio's DELETE: the recording (metadata and media) is gone from then on."""
        with self._lock:
            self._created.pop(recording_sid, None)
            return self._recordings.pop(recording_sid, None)

    def snapshot(self) -> list[tuple[SimRecording, datetime]]:
        """Every recording with its creation time, for the account-level listing."""
        with self._lock:
            self._listing_requests += 1
            return [(r, self._created[sid]) for sid, r in self._recordings.items()]

    def get(self, recording_sid: str) -> SimRecording | None:
        with self._lock:
            return self._recordings.get(recording_sid)

    def created_at(self, recording_sid: str) -> datetime:
        with self._lock:
            return self._created.get(recording_sid, datetime.now(UTC))

    def for_call(self, call_sid: str) -> list[SimRecording]:
        with self._lock:
            self._listing_requests += 1
            return [r for r in self._recordings.values() if r.call_sid == call_sid]

    def set_faults(self, recording_sid: str, faults: list[Fault]) -> None:
        with self._lock:
            self._faults[recording_sid] = deque(faults)

    def begin_media_request(self, recording_sid: str) -> tuple[SimRecording | None, Fault | None]:
        """Count the request and, for a known recording, consume its next scripted fault."""
        with self._lock:
            self._media_requests[recording_sid] += 1
            rec = self._recordings.get(recording_sid)
            if rec is not None:
                self._first_request_at.setdefault(rec.call_sid, time.monotonic())
            queue = self._faults.get(recording_sid)
            fault = queue.popleft() if rec is not None and queue else None
            return rec, fault

    def issue_ticket(self, fault: Fault | None) -> str:
        ticket = secrets.token_hex(8)
        with self._lock:
            self._tickets[ticket] = fault
        return ticket

    def redeem_ticket(self, ticket: str) -> Fault | None:
        with self._lock:
            return self._tickets.pop(ticket, None)

    def download_started(self, rec: SimRecording) -> None:
        with self._lock:
            self._downloads[rec.recording_sid] += 1
            self._order.setdefault(rec.business_id, []).append(rec.call_sid)

    def download_completed(self, rec: SimRecording) -> None:
        with self._lock:
            self._completed[rec.recording_sid] += 1

    @contextmanager
    def held(self) -> Iterator[Callable[[], bool]]:
        """A place in the line of held media requests; yields "is it my turn?", so that
        on release they go on in the order they arrived."""
        with self._lock:
            self._hold_tickets += 1
            ticket = self._hold_tickets
            self._held.append(ticket)

        def my_turn() -> bool:
            with self._lock:
                return self._held[0] == ticket

        try:
            yield my_turn
        finally:
            with self._lock:
                self._held.remove(ticket)

    @contextmanager
    def in_flight(self, business_id: str) -> Iterator[Slot]:
        with self._lock:
            self._inflight[business_id] += 1
            now = self._inflight[business_id]
            self._max_inflight[business_id] = max(self._max_inflight[business_id], now)
        slot = Slot(self, business_id)
        try:
            yield slot
        finally:
            slot.release()

    def _release(self, business_id: str) -> None:
        with self._lock:
            self._inflight[business_id] -= 1

    def downloads(self, recording_sid: str) -> int:
        with self._lock:
            return self._downloads[recording_sid]

    def completed_downloads(self, recording_sid: str) -> int:
        with self._lock:
            return self._completed[recording_sid]

    def total_downloads(self) -> int:
        with self._lock:
            return sum(self._downloads.values())

    def media_requests(self, recording_sid: str) -> int:
        with self._lock:
            return self._media_requests[recording_sid]

    def max_concurrent(self, business_id: str) -> int:
        with self._lock:
            return self._max_inflight[business_id]

    def current_concurrent(self, business_id: str) -> int:
        with self._lock:
            return self._inflight[business_id]

    def order_started(self, business_id: str) -> list[str]:
        with self._lock:
            return list(self._order.get(business_id, []))

    def first_media_request_times(self) -> dict[str, float]:
        with self._lock:
            return dict(self._first_request_at)

    def listing_requests(self) -> int:
        with self._lock:
            return self._listing_requests

    def reset_counters(self) -> None:
        with self._lock:
            self._media_requests.clear()
            self._downloads.clear()
            self._completed.clear()
            self._order.clear()
            self._first_request_at.clear()
            self._listing_requests = 0
            # Requests still running keep counting; the high-water mark restarts from them.
            self._max_inflight = Counter({b: n for b, n in self._inflight.items() if n > 0})
