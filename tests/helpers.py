"""Small helpers for end-to-end tests: registering calls through signed webhooks and
playing them through the real HTTP API."""

from __future__ import annotations

import threading
import time

import httpx

from tests.stack import auth, wait_for
from twilio_sim import SimRecording, Simulator


def call_sid(n: int) -> str:
    return f"CA{n:032x}"


def rec_sid(n: int) -> str:
    return f"RE{n:032x}"


def register(
    sim: Simulator,
    web: str,
    business: str,
    n: int,
    *,
    size_bytes: int = 64 * 1024,
    recording_webhook: bool = True,
    parent: str = "",
) -> SimRecording:
    rec = SimRecording(business, call_sid(n), rec_sid(n), size_bytes=size_bytes)
    sim.add_recording(rec)
    stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(1_700_000_000 + n))
    hooks = f"{web}/webhooks/twilio/{business}"
    status = sim.send_call_status(
        f"{hooks}/call-status",
        call_sid=rec.call_sid,
        parent_call_sid=parent,
        timestamp=stamp,
        sequence_number=1,
    )
    assert status == 204, status
    if recording_webhook:
        assert sim.send_recording_status(f"{hooks}/recording-status", rec) == 204
    return rec


def play(web: str, business: str, sid: str, **headers: str) -> httpx.Response:
    return httpx.get(
        f"{web}/api/calls/{sid}/recording", headers={**auth(business), **headers}, timeout=10
    )


def play_until_stored(web: str, business: str, sid: str, timeout_s: float = 60) -> httpx.Response:
    answer: list[httpx.Response] = []

    def stored() -> bool:
        r = play(web, business, sid)
        assert r.status_code in (200, 202), (r.status_code, r.text)
        answer[:] = [r]
        return r.status_code == 200

    wait_for(stored, f"{sid} to be stored", timeout_s)
    return answer[0]


def click_together(webs: list[str], business: str, sid: str, clicks: int) -> list[int]:
    """``clicks`` plays of one call released at the same instant from as many threads,
    spread over ``webs``; returns the status codes."""
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clicks)

    def click(i: int) -> None:
        barrier.wait()
        r = play(webs[i % len(webs)], business, sid)
        with lock:
            statuses.append(r.status_code)

    threads = [threading.Thread(target=click, args=(i,)) for i in range(clicks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses
