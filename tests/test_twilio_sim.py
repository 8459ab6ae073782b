"""The Twilio simulator, exercised over real HTTP the way callrec's worker and web use it."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from twilio_sim import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    Fault,
    SimRecording,
    Simulator,
    demo_recordings,
    media_bytes,
)
from twilio_sim.server import ServerThread

BUSINESS = "biz-1"
SID_RE = re.compile(r"^(CA|RE)[0-9a-f]{32}$")


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator() as sim:
        yield sim


@pytest.fixture
def rec(simulator: Simulator) -> SimRecording:
    recording = demo_recordings(BUSINESS, 1)[0]
    simulator.add_recording(recording)
    return recording


def media_url(sim: Simulator, rec: SimRecording) -> str:
    return sim.recording_url(rec.recording_sid) + ".mp3"


def auth(sim: Simulator) -> tuple[str, str]:
    return (sim.account_sid, sim.auth_token)


def wait_until(predicate: object, timeout_s: float = 5.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


# --- models -------------------------------------------------------------------------------


def test_demo_constants_and_sids_are_twilio_shaped() -> None:
    assert re.fullmatch(r"AC[0-9a-f]{32}", DEMO_ACCOUNT_SID)
    assert re.fullmatch(r"[0-9a-f]{32}", DEMO_AUTH_TOKEN)
    recs = demo_recordings("b", 4)
    assert recs == demo_recordings("b", 4)  # stable across runs of `callrec dev`
    assert recs == Simulator.demo_recordings("b", 4)
    assert all(SID_RE.match(r.call_sid) and SID_RE.match(r.recording_sid) for r in recs)
    assert all(r.call_sid.startswith("CA") and r.recording_sid.startswith("RE") for r in recs)
    assert len({r.call_sid for r in recs}) == 4
    assert {r.call_sid for r in recs}.isdisjoint(c.call_sid for c in demo_recordings("c", 4))


def test_media_bytes_are_deterministic_sized_and_distinct() -> None:
    a, b = demo_recordings("b", 2)
    assert media_bytes(a) == media_bytes(SimRecording(**a.__dict__))
    assert len(media_bytes(a)) == a.size_bytes
    assert media_bytes(a).startswith(b"ID3")
    assert media_bytes(a)[10:] != media_bytes(b)[10 : 10 + len(media_bytes(a)) - 10]
    # No repeating block, so a body served from the wrong offset can never compare equal.
    body = media_bytes(a)
    assert body[10:4106] != body[4106:8202]


# --- auth and REST ------------------------------------------------------------------------


def test_media_requires_basic_auth(simulator: Simulator, rec: SimRecording) -> None:
    url = media_url(simulator, rec)
    anonymous = httpx.get(url)
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == 20003
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(url, auth=(simulator.account_sid, "wrong")).status_code == 401
    assert httpx.get(url, auth=auth(simulator)).status_code == 200
    assert simulator.downloads(rec.recording_sid) == 1


def test_foreign_account_in_path_is_404(simulator: Simulator, rec: SimRecording) -> None:
    other = "AC" + "0" * 32
    url = f"{simulator.base_url}/2010-04-01/Accounts/{other}/Recordings/{rec.recording_sid}.mp3"
    response = httpx.get(url, auth=auth(simulator))
    assert response.status_code == 404
    assert response.json()["code"] == 20404


def test_media_body_matches_media_bytes(simulator: Simulator, rec: SimRecording) -> None:
    simulator.chunk_size = 1000  # many chunks: exercises the streaming loop's boundaries
    response = httpx.get(media_url(simulator, rec), auth=auth(simulator))
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    assert int(response.headers["content-length"]) == rec.size_bytes
    assert response.content == media_bytes(rec)
    # The RecordingUrl form without an extension is accepted too.
    bare = httpx.get(simulator.recording_url(rec.recording_sid), auth=auth(simulator))
    assert bare.content == media_bytes(rec)
    assert simulator.downloads(rec.recording_sid) == 2
    assert simulator.total_downloads() == 2
    assert simulator.media_requests(rec.recording_sid) == 2
    assert simulator.order_started(BUSINESS) == [rec.call_sid, rec.call_sid]
    assert simulator.current_concurrent(BUSINESS) == 0
    assert simulator.max_concurrent(BUSINESS) == 1


def test_unknown_recording_is_404(simulator: Simulator) -> None:
    sid = "RE" + "f" * 32
    url = simulator.recording_url(sid) + ".mp3"
    response = httpx.get(url, auth=auth(simulator))
    assert response.status_code == 404
    assert response.json()["code"] == 20404
    assert simulator.media_requests(sid) == 1
    assert simulator.total_downloads() == 0


def test_listing_shape(simulator: Simulator, rec: SimRecording) -> None:
    second = SimRecording(BUSINESS, rec.call_sid, "RE" + "a" * 32, duration_s=7)
    simulator.add_recording(second)
    base = f"{simulator.base_url}/2010-04-01/Accounts/{simulator.account_sid}/Calls"
    page = httpx.get(f"{base}/{rec.call_sid}/Recordings.json", auth=auth(simulator)).json()
    assert page["page"] == 0 and page["page_size"] == 50
    assert page["next_page_uri"] is None
    by_sid = {r["sid"]: r for r in page["recordings"]}
    assert set(by_sid) == {rec.recording_sid, second.recording_sid}
    item = by_sid[second.recording_sid]
    assert item["call_sid"] == rec.call_sid
    assert item["account_sid"] == simulator.account_sid
    assert item["duration"] == "7"
    assert item["status"] == "completed"
    assert item["uri"] == (
        f"/2010-04-01/Accounts/{simulator.account_sid}/Recordings/{second.recording_sid}.json"
    )
    assert item["media_url"] == simulator.recording_url(second.recording_sid)
    parsedate_to_datetime(item["date_created"])  # RFC 2822, as Twilio sends it

    empty = httpx.get(f"{base}/CA{'0' * 32}/Recordings.json", auth=auth(simulator))
    assert empty.status_code == 200
    assert empty.json()["recordings"] == []
    assert httpx.get(f"{base}/{rec.call_sid}/Recordings.json").status_code == 401
    assert simulator.listing_requests() == 2  # the unauthenticated one never reached it
    assert simulator.total_downloads() == 0  # listing is not a download


def test_recording_metadata(simulator: Simulator, rec: SimRecording) -> None:
    url = simulator.recording_url(rec.recording_sid) + ".json"
    meta = httpx.get(url, auth=auth(simulator)).json()
    assert meta["sid"] == rec.recording_sid
    assert meta["call_sid"] == rec.call_sid
    assert meta["duration"] == str(rec.duration_s)
    assert simulator.media_requests(rec.recording_sid) == 0


# --- faults -------------------------------------------------------------------------------


def test_status_faults_are_consumed_in_order(simulator: Simulator, rec: SimRecording) -> None:
    simulator.set_faults(
        rec.recording_sid,
        [
            Fault.not_found(),
            Fault.too_many(2),
            Fault.too_many(None),
            Fault.server_error(503),
        ],
    )
    url, creds = media_url(simulator, rec), auth(simulator)
    r404 = httpx.get(url, auth=creds)
    assert (r404.status_code, r404.json()["code"]) == (404, 20404)
    r429 = httpx.get(url, auth=creds)
    assert (r429.status_code, r429.json()["code"]) == (429, 20429)
    assert r429.headers["retry-after"] == "2"
    bare429 = httpx.get(url, auth=creds)
    assert bare429.status_code == 429 and "retry-after" not in bare429.headers
    assert httpx.get(url, auth=creds).status_code == 503
    ok = httpx.get(url, auth=creds)
    assert ok.status_code == 200 and ok.content == media_bytes(rec)
    assert simulator.media_requests(rec.recording_sid) == 5
    assert simulator.downloads(rec.recording_sid) == 1


def test_fractional_retry_after_is_kept(simulator: Simulator, rec: SimRecording) -> None:
    simulator.set_faults(rec.recording_sid, [Fault.too_many(0.25)])
    response = httpx.get(media_url(simulator, rec), auth=auth(simulator))
    assert response.headers["retry-after"] == "0.25"


def test_cut_off_really_drops_the_connection(simulator: Simulator, rec: SimRecording) -> None:
    simulator.set_faults(rec.recording_sid, [Fault.cut_off(1000)])
    received = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("GET", media_url(simulator, rec), auth=auth(simulator)) as response,
    ):
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == rec.size_bytes
        for chunk in response.iter_bytes():
            received += chunk
    assert bytes(received) == media_bytes(rec)[:1000]
    assert simulator.downloads(rec.recording_sid) == 1  # a 200 was started
    assert wait_until(lambda: simulator.current_concurrent(BUSINESS) == 0)
    # The next request is healthy again.
    ok = httpx.get(media_url(simulator, rec), auth=auth(simulator))
    assert ok.content == media_bytes(rec)


def test_stall_triggers_read_timeout_and_frees_the_slot(
    simulator: Simulator, rec: SimRecording
) -> None:
    simulator.set_faults(rec.recording_sid, [Fault.stall(30)])
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream(
            "GET",
            media_url(simulator, rec),
            auth=auth(simulator),
            timeout=httpx.Timeout(5, read=0.3),
        ) as response,
    ):
        assert response.status_code == 200  # headers arrive before the stall
        response.read()
    # The server notices the client leaving instead of holding the slot for the 30 s stall.
    assert wait_until(lambda: simulator.current_concurrent(BUSINESS) == 0, timeout_s=20)


def test_latency_delays_headers(simulator: Simulator, rec: SimRecording) -> None:
    simulator.latency_s = 60
    with pytest.raises(httpx.ReadTimeout):  # no headers yet
        httpx.get(
            media_url(simulator, rec), auth=auth(simulator), timeout=httpx.Timeout(5, read=0.5)
        )
    # The delayed request ends with its client: its slot is free.
    assert wait_until(lambda: simulator.current_concurrent(BUSINESS) == 0, timeout_s=20)
    simulator.latency_s = 0
    response = httpx.get(media_url(simulator, rec), auth=auth(simulator))
    assert response.status_code == 200 and response.content == media_bytes(rec)


def test_client_leaving_mid_body_frees_the_slot(simulator: Simulator, rec: SimRecording) -> None:
    simulator.chunk_size = 1024
    simulator.chunk_delay_s = 0.05
    with httpx.stream("GET", media_url(simulator, rec), auth=auth(simulator)) as response:
        # Keep the iterator referenced: dropping it would close the connection right away.
        chunks = response.iter_raw()
        next(chunks)
        assert simulator.current_concurrent(BUSINESS) == 1
        time.sleep(0.2)
        assert simulator.current_concurrent(BUSINESS) == 1  # still trickling the body
    assert wait_until(lambda: simulator.current_concurrent(BUSINESS) == 0, timeout_s=3)
    assert simulator.max_concurrent(BUSINESS) == 1


# --- CDN redirect -------------------------------------------------------------------------


def test_redirect_to_cdn(simulator: Simulator, rec: SimRecording) -> None:
    simulator.redirect_to_cdn = True
    redirect = httpx.get(media_url(simulator, rec), auth=auth(simulator))
    assert redirect.status_code == 302
    location = redirect.headers["location"]
    assert location.startswith(simulator.cdn_base_url + "/")
    assert simulator.cdn_base_url != simulator.base_url
    assert simulator.downloads(rec.recording_sid) == 0  # a redirect is not a download

    # httpx drops credentials on a cross-origin redirect by itself, so forward them by hand
    # to prove the CDN refuses a client that would leak them.
    twilio_auth = redirect.request.headers["authorization"]
    assert httpx.get(location, headers={"Authorization": twilio_auth}).status_code == 403
    signature = httpx.URL(location).params["Signature"]
    forged = location.replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:])
    assert httpx.get(forged).status_code == 403
    assert simulator.downloads(rec.recording_sid) == 0

    body = httpx.get(location)
    assert body.status_code == 200
    assert body.content == media_bytes(rec)
    assert simulator.downloads(rec.recording_sid) == 1
    assert simulator.media_requests(rec.recording_sid) == 1


def test_body_faults_follow_the_redirect(simulator: Simulator, rec: SimRecording) -> None:
    simulator.redirect_to_cdn = True
    simulator.set_faults(rec.recording_sid, [Fault.too_many(1), Fault.cut_off(10)])
    assert httpx.get(media_url(simulator, rec), auth=auth(simulator)).status_code == 429
    location = httpx.get(media_url(simulator, rec), auth=auth(simulator)).headers["location"]
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(location)


# --- concurrency counters -----------------------------------------------------------------


async def test_max_concurrent_counts_parallel_downloads(simulator: Simulator) -> None:
    recs = demo_recordings(BUSINESS, 5)
    other = demo_recordings("biz-2", 1)[0]
    for r in [*recs, other]:
        simulator.add_recording(r)
    simulator.chunk_size = 4096
    simulator.chunk_delay_s = 0.02

    async with httpx.AsyncClient(auth=auth(simulator)) as client:

        async def fetch(r: SimRecording) -> bytes:
            response = await client.get(media_url(simulator, r))
            response.raise_for_status()
            return response.content

        bodies = await asyncio.gather(*(fetch(r) for r in recs))
        assert list(bodies) == [media_bytes(r) for r in recs]
        await fetch(other)

    assert simulator.max_concurrent(BUSINESS) == 5
    assert simulator.current_concurrent(BUSINESS) == 0
    assert simulator.max_concurrent("biz-2") == 1
    assert sorted(simulator.order_started(BUSINESS)) == sorted(r.call_sid for r in recs)
    assert simulator.total_downloads() == 6


def test_order_started_and_reset(simulator: Simulator) -> None:
    recs = demo_recordings(BUSINESS, 3)
    for r in recs:
        simulator.add_recording(r)
    for r in reversed(recs):
        assert httpx.get(media_url(simulator, r), auth=auth(simulator)).status_code == 200
    assert simulator.order_started(BUSINESS) == [r.call_sid for r in reversed(recs)]
    simulator.reset_counters()
    assert simulator.order_started(BUSINESS) == []
    assert simulator.total_downloads() == 0
    assert simulator.media_requests(recs[0].recording_sid) == 0
    assert simulator.max_concurrent(BUSINESS) == 0
    # Recordings survive a reset.
    assert httpx.get(media_url(simulator, recs[0]), auth=auth(simulator)).status_code == 200


def test_lifecycle_errors() -> None:
    sim = Simulator()
    with pytest.raises(RuntimeError):
        _ = sim.base_url
    with sim:
        assert sim.base_url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError):
            sim.start()
    with pytest.raises(RuntimeError):
        _ = sim.base_url


# --- webhooks -----------------------------------------------------------------------------


class Receiver:
    """A tiny Starlette app standing in for callrec's webhook endpoints."""

    def __init__(self, auth_token: str) -> None:
        self.validator = RequestValidator(auth_token)
        self.received: list[tuple[str, dict[str, str], bool]] = []
        self.server = ServerThread(
            [
                Starlette(
                    routes=[
                        Route("/webhooks/{rest:path}", self.hook, methods=["POST"]),
                    ]
                )
            ],
            name="test-receiver",
        )

    async def hook(self, request: Request) -> Response:
        # Parsed by hand: Starlette's form() would need python-multipart, which callrec lacks.
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        ok = self.validator.validate(
            str(request.url), form, request.headers.get("x-twilio-signature", "")
        )
        self.received.append((str(request.url), form, ok))
        return Response(status_code=204 if ok else 403)


@pytest.fixture
def receiver(simulator: Simulator) -> Iterator[Receiver]:
    recv = Receiver(simulator.auth_token)
    recv.server.start()
    try:
        yield recv
    finally:
        recv.server.stop()


def test_call_status_webhook_is_signed(simulator: Simulator, receiver: Receiver) -> None:
    url = f"{receiver.server.urls()[0]}/webhooks/twilio/{BUSINESS}/call-status?x=1&y=two"
    status = simulator.send_call_status(
        url, call_sid="CA" + "1" * 32, sequence_number=3, call_status="in-progress", duration_s=12
    )
    assert status == 204
    got_url, form, ok = receiver.received[-1]
    assert ok and got_url == url
    assert set(form) == {
        "CallSid",
        "From",
        "To",
        "Direction",
        "CallStatus",
        "CallDuration",
        "Timestamp",
        "SequenceNumber",
        "AccountSid",
    }
    assert form["CallStatus"] == "in-progress"
    assert form["CallDuration"] == "12"
    assert form["SequenceNumber"] == "3"
    assert form["AccountSid"] == simulator.account_sid
    parsedate_to_datetime(form["Timestamp"])

    child = simulator.send_call_status(
        url,
        call_sid="CA" + "2" * 32,
        parent_call_sid="CA" + "1" * 32,
        timestamp="Tue, 10 Aug 2010 12:00:00 +0000",
    )
    assert child == 204
    form = receiver.received[-1][1]
    assert form["ParentCallSid"] == "CA" + "1" * 32
    assert form["Timestamp"] == "Tue, 10 Aug 2010 12:00:00 +0000"


def test_recording_status_webhook_is_signed(
    simulator: Simulator, receiver: Receiver, rec: SimRecording
) -> None:
    url = f"{receiver.server.urls()[0]}/webhooks/twilio/{BUSINESS}/recording-status"
    assert simulator.send_recording_status(url, rec) == 204
    form = dict(receiver.received[-1][1])
    assert parsedate_to_datetime(form.pop("RecordingStartTime")).tzinfo is not None
    assert form == {
        "AccountSid": simulator.account_sid,
        "CallSid": rec.call_sid,
        "RecordingSid": rec.recording_sid,
        "RecordingUrl": simulator.recording_url(rec.recording_sid),
        "RecordingStatus": "completed",
        "RecordingDuration": str(rec.duration_s),
        "RecordingChannels": "1",
        "RecordingSource": "RecordVerb",
    }
    # The RecordingUrl works as-is (plus .mp3) against the simulator.
    media = httpx.get(form["RecordingUrl"] + ".mp3", auth=auth(simulator))
    assert media.content == media_bytes(rec)

    assert simulator.send_recording_status(url, rec, status="failed", error_code="13617") == 204
    form = receiver.received[-1][1]
    assert (form["RecordingStatus"], form["ErrorCode"]) == ("failed", "13617")


def test_webhook_signature_is_rejected_with_another_token(simulator: Simulator) -> None:
    recv = Receiver("f" * 32)
    recv.server.start()
    try:
        url = f"{recv.server.urls()[0]}/webhooks/twilio/{BUSINESS}/call-status"
        assert simulator.send_call_status(url, call_sid="CA" + "1" * 32) == 403
        assert recv.received[-1][2] is False
    finally:
        recv.server.stop()


def test_stop_cuts_off_responses_in_progress(caplog: pytest.LogCaptureFixture) -> None:
    sim = Simulator()
    sim.start()
    rec = demo_recordings(BUSINESS, 1)[0]
    sim.add_recording(rec)
    sim.set_faults(rec.recording_sid, [Fault.stall(60)])
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            httpx.get(media_url(sim, rec), auth=auth(sim), timeout=30)
        except httpx.HTTPError as exc:
            errors.append(exc)

    client = threading.Thread(target=fetch)
    client.start()
    assert wait_until(lambda: sim.downloads(rec.recording_sid) == 1)
    sim.stop()
    # The stop cut the stalled body off itself: uvicorn's graceful shutdown found no
    # connection left to wait out and cancel (it says so when it has to).
    timed_out = [r for r in caplog.records if "timeout graceful shutdown" in r.getMessage()]
    assert timed_out == []
    client.join(5)
    assert not client.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], httpx.RemoteProtocolError)
