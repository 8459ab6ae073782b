"""Every Twilio fault the simulator can inflict, through real web and worker processes.

One stack serves all cases (one business each, one slot per business, so a second
recording queued behind the faulted one proves the slot was released and the next
request promoted). The faulted recording's media requests are counted at the simulator.
"""

from __future__ import annotations

import asyncio
import functools
import re
import subprocess
import sys
from dataclasses import dataclass

import httpx
import redis

from calls import keys
from calls.events import request_download
from calls.shards import ShardMap
from tests import readiness
from tests.helpers import call_sid, play, register
from tests.stack import ROOT, Stack, auth, wait_for
from twilio_sim import Fault, SimRecording, Simulator, media_bytes

MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Case:
    business: str
    faults: list[Fault]
    media_requests: int  # expected at the simulator for the faulted recording
    stored: bool  # False: the recording ends failed and dead-lettered
    throttles: int = 0  # 429s among the faults: waited out, never counted as attempts


CASES = [
    Case("nf", [Fault.not_found()], 2, True),
    Case("tmra", [Fault.too_many(retry_after_s=0.3)], 2, True, throttles=1),
    # More 429s than DOWNLOAD_MAX_ATTEMPTS: still stored, since a 429 is no attempt.
    Case("tm", [Fault.too_many()] * (MAX_ATTEMPTS + 1), MAX_ATTEMPTS + 2, True, throttles=4),
    Case("se", [Fault.server_error(503)], 2, True),
    Case("cut", [Fault.cut_off(after_bytes=1000)], 2, True),
    # A stalled body (read timeout) is checked in-process: tests/test_consumer_download.py.
    # Retryable every time: exactly DOWNLOAD_MAX_ATTEMPTS media requests, then failed.
    Case("exhaust", [Fault.server_error(500)] * MAX_ATTEMPTS, MAX_ATTEMPTS, False),
    # Not retryable at all (Twilio refusing the request): one request, then failed.
    Case("fatal", [Fault.server_error(403)], 1, False),
]


def status_of(web: str, b: str, sid: str) -> str:
    r = httpx.get(f"{web}/api/calls/{sid}/recording/status", headers=auth(b), timeout=10)
    assert r.status_code == 200, r.text
    word: str = r.json()["status"]
    return word


def has_status(web: str, b: str, sid: str, word: str) -> bool:
    return status_of(web, b, sid) == word


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callrec.cli", *args],
        env=stack.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_fault_mode_is_retried_or_failed_and_frees_the_slot(
    stack: Stack, sim: Simulator
) -> None:
    stack.env_overrides.update(
        MAX_SLOTS_PER_BUSINESS="1",
        DOWNLOAD_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        # Backoffs of 0.1-0.3 s instead of 1-3 s: the delays themselves are unit-tested.
        DOWNLOAD_BACKOFF_BASE_MS="100",
        PREFETCH_ON_WEBHOOK="false",
    )
    web = stack.start_web()
    stack.start_worker()
    pairs: dict[str, tuple[SimRecording, SimRecording]] = {}
    for i, case in enumerate(CASES):
        first = register(sim, web, case.business, 100 + 2 * i)
        second = register(sim, web, case.business, 101 + 2 * i)
        sim.set_faults(first.recording_sid, list(case.faults))
        pairs[case.business] = (first, second)
    for case in CASES:
        first, second = pairs[case.business]
        assert play(web, case.business, first.call_sid).status_code == 202
        r = play(web, case.business, second.call_sid)
        assert r.status_code == 202

    def settled(case: Case) -> bool:
        first, second = pairs[case.business]
        return status_of(web, case.business, second.call_sid) == "ready" and status_of(
            web, case.business, first.call_sid
        ) == ("ready" if case.stored else "failed")

    for case in CASES:
        wait_for(functools.partial(settled, case), f"case {case.business} to settle", 60)

    client = redis.Redis.from_url(stack.redis_url)
    logs = stack.worker_logs()
    for case in CASES:
        first, second = pairs[case.business]
        b = case.business
        assert sim.media_requests(first.recording_sid) == case.media_requests, b
        # The queued one got the slot once the faulted one let go of it, and ran once.
        assert sim.media_requests(second.recording_sid) == 1, b
        path = stack.recordings_dir / f"{second.call_sid}.mp3"
        assert path.read_bytes() == media_bytes(second), b
        assert client.scard(keys.slots(b)) == 0, b
        assert client.llen(keys.queue(b)) == 0 and client.scard(keys.queued(b)) == 0, b
        retries = re.findall(rf"RECORDING_RETRY business_id={b} sid={first.call_sid} ", logs)
        if case.stored:
            stored = stack.recordings_dir / f"{first.call_sid}.mp3"
            assert stored.read_bytes() == media_bytes(first), b
            assert len(retries) == case.media_requests - 1 - case.throttles, (b, retries)
            throttled = re.findall(rf"TWILIO_THROTTLED business_id={b} ", logs)
            assert len(throttled) == case.throttles, (b, throttled)
            assert "RECORDING_FAILED business_id=" + b not in logs
        else:
            assert not (stack.recordings_dir / f"{first.call_sid}.mp3").exists(), b
            assert len(retries) == case.media_requests - 1, (b, retries)
            assert re.search(
                rf"RECORDING_FAILED business_id={b} sid={first.call_sid} "
                rf"attempts={case.media_requests} reason=media_\d{{3}}",
                logs,
            ), b
    # Retry-After was honoured: the 429 asked for 300 ms and got it.
    assert re.search(
        r"TWILIO_THROTTLED business_id=tmra account=AC\w+ throttles=1 wait_ms=300", logs
    )
    # The two failures are dead letters with their reason; the operator lists them.
    listing = cli(stack, "dead-letters")
    assert listing.returncode == 0, listing.stderr
    exhaust_sid, fatal_sid = pairs["exhaust"][0].call_sid, pairs["fatal"][0].call_sid
    assert re.search(
        rf"business_id=exhaust sid={exhaust_sid} kind=download attempts=3 reason='media 500'",
        listing.stdout,
    ), listing.stdout
    assert re.search(
        rf"business_id=fatal sid={fatal_sid} kind=download attempts=1 reason='media 403'",
        listing.stdout,
    ), listing.stdout
    assert client.xlen(keys.DEAD_LETTERS) == 2

    # Twilio healed: requeueing the dead letter gives it a fresh set of attempts.
    entry = next(line.split()[0] for line in listing.stdout.splitlines() if exhaust_sid in line)
    requeued = cli(stack, "dead-letters", "--requeue", "--id", entry)
    assert requeued.returncode == 0 and f"requeued {exhaust_sid}" in requeued.stdout
    wait_for(lambda: status_of(web, "exhaust", exhaust_sid) == "ready", "requeued download")
    exhaust_first = pairs["exhaust"][0]
    path = stack.recordings_dir / f"{exhaust_sid}.mp3"
    assert path.read_bytes() == media_bytes(exhaust_first)
    assert sim.media_requests(exhaust_first.recording_sid) == MAX_ATTEMPTS + 1
    assert client.xlen(keys.DEAD_LETTERS) == 1
    remaining = cli(stack, "dead-letters")
    assert fatal_sid in remaining.stdout and exhaust_sid not in remaining.stdout
    status = cli(stack, "status", "--business", "exhaust")
    assert status.returncode == 0, status.stderr
    assert re.search(r"^exhaust\s+0/1\s+0\s+-$", status.stdout, re.M), status.stdout
    assert re.search(r"dead letters: 1\b", status.stdout), status.stdout

    # A person pressing play on a failed recording asks again with a full set of
    # attempts: two more 500s are retried through, not failed at once on the old count.
    fatal_first = pairs["fatal"][0]
    sim.set_faults(fatal_first.recording_sid, [Fault.server_error(), Fault.server_error()])
    assert play(web, "fatal", fatal_sid).status_code == 202
    wait_for(lambda: status_of(web, "fatal", fatal_sid) == "ready", "a failed recording replayed")
    assert sim.media_requests(fatal_first.recording_sid) == 1 + MAX_ATTEMPTS

    # A 302 to the CDN (another origin) is followed without Twilio's credentials: the
    # CDN refuses any request carrying them (403, not retryable), so a stored file
    # proves they stayed behind. A body fault there is retried like any other.
    sim.redirect_to_cdn = True
    first = register(sim, web, "cdn", 300)
    second = register(sim, web, "cdn", 301)
    sim.set_faults(first.recording_sid, [Fault.cut_off(after_bytes=500)])
    play(web, "cdn", first.call_sid)
    play(web, "cdn", second.call_sid)
    # The retry gave up the only slot during its backoff, so the second one ran meanwhile.
    for rec in (first, second):
        wait_for(functools.partial(has_status, web, "cdn", rec.call_sid, "ready"), "cdn")
    assert (stack.recordings_dir / f"{first.call_sid}.mp3").read_bytes() == media_bytes(first)
    assert sim.media_requests(first.recording_sid) == 2
    assert sim.downloads(first.recording_sid) == 2  # bodies started at the CDN
    assert client.scard(keys.slots("cdn")) == 0
    client.close()


def test_absent_recording_is_never_fetched(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web()  # prefetch on: an absent callback must not prefetch
    worker = stack.start_worker()
    rec = register(sim, web, "abs", 400, recording_webhook=False)
    hook = f"{web}/webhooks/twilio/abs/recording-status"
    assert sim.send_recording_status(hook, rec, status="absent") == 204
    assert play(web, "abs", rec.call_sid).status_code == 404
    assert status_of(web, "abs", rec.call_sid) == "none"
    # A request that raced the absent callback (or a requeued dead letter) reaches the
    # worker anyway: it takes no slot and asks Twilio nothing.
    client = redis.asyncio.Redis.from_url(stack.redis_url)

    async def late_request() -> None:
        await request_download(client, ShardMap(1), "abs", rec.call_sid, source="test")
        await client.aclose()

    asyncio.run(late_request())
    probe = redis.Redis.from_url(stack.redis_url)
    wait_for(lambda: readiness.events_handled(probe), "the late request handled")
    probe.close()
    assert f"request ignored business_id=abs sid={rec.call_sid}" in worker.log()
    other = register(sim, web, "abs", 401)  # the worker is alive and still downloading
    wait_for(lambda: status_of(web, "abs", other.call_sid) == "ready", "prefetch of another")
    assert sim.media_requests(rec.recording_sid) == 0
    assert sim.listing_requests() == 0
    assert play(web, "abs", rec.call_sid).status_code == 404
    assert not (stack.recordings_dir / f"{rec.call_sid}.mp3").exists()
    assert call_sid(400) == rec.call_sid
