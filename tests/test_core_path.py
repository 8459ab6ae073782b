"""The core path end to end, with real processes: signed webhooks into the web app,
events on the stream, workers taking slots, the simulator serving media, files on disk,
Range answers from storage."""

from __future__ import annotations

import math
import re

import httpx

from calls import keys
from consumers.__main__ import EXIT_DRAINED
from tests.clients import on_server_and_cluster, sync_redis
from tests.helpers import call_sid, click_together, play, play_until_stored, register
from tests.stack import Stack, auth, wait_for
from twilio_sim import Simulator, media_bytes

# The core path holds on one server and on a 3-primary cluster alike (guarantee 10).
pytestmark = on_server_and_cluster

B = "biz1"


def test_ten_plays_three_at_once_fifo_with_contract_log_lines(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web(PREFETCH_ON_WEBHOOK="false")
    stack.start_worker()
    recs = [register(sim, web, B, i) for i in range(10)]
    sim.latency_s = 0.4
    sim.chunk_delay_s = 0.02
    # Held at Twilio until all ten are asked for: on a busy machine the first downloads
    # could otherwise end before the last plays arrive, and the queue would never form.
    sim.hold_media = True
    for rec in recs:  # one after another: this order is the FIFO order
        assert play(web, B, rec.call_sid).status_code == 202
    client = sync_redis(stack.redis_url)
    wait_for(lambda: client.llen(keys.queue(B)) == 7, "seven queued")
    sim.hold_media = False
    for rec in recs:
        body = play_until_stored(web, B, rec.call_sid).content
        assert body == media_bytes(rec)
    assert sim.max_concurrent(B) == 3
    assert all(sim.downloads(r.recording_sid) == 1 for r in recs)
    # A file is stored before its slot is released (and RECORDING_DONE logged).
    wait_for(lambda: client.scard(keys.slots(B)) == 0, "every slot released")
    client.close()
    assert stack.stop_workers() == [EXIT_DRAINED]  # its log is complete
    logs = stack.worker_logs()
    # FIFO is the slot script's promise: admissions happen exactly in play order ...
    admitted = re.findall(r"RECORDING_(?:ENQUEUE|NEXT) business_id=\w+ sid=(CA\w+)", logs)
    assert admitted == [r.call_sid for r in recs]
    # ... and at Twilio a download never overtakes one admitted a full round earlier
    # (the three of a round race each other on the wire).
    started = sim.order_started(B)
    assert sorted(started) == sorted(r.call_sid for r in recs)
    assert all(abs(started.index(r.call_sid) - i) < 3 for i, r in enumerate(recs))
    assert (
        len(re.findall(rf"RECORDING_ENQUEUE business_id={B} sid=CA\w+ active=[1-3]/3", logs)) == 3
    )
    assert (
        len(
            re.findall(
                rf"RECORDING_QUEUED business_id={B} sid=CA\w+ active=3/3 queue_len=[1-7]\b", logs
            )
        )
        == 7
    )
    assert len(re.findall(rf"RECORDING_DONE business_id={B} sid=CA\w+ active=[0-2]/3", logs)) == 10
    assert len(re.findall(rf"RECORDING_NEXT business_id={B} sid=CA\w+ active=3/3", logs)) == 7
    assert (stack.recordings_dir / f"{recs[0].call_sid}.mp3").read_bytes() == media_bytes(recs[0])


def test_thirty_concurrent_plays_across_two_webs_and_two_workers_download_once(
    stack: Stack, sim: Simulator
) -> None:
    webs = [stack.start_web(PREFETCH_ON_WEBHOOK="false") for _ in range(2)]
    stack.start_worker()
    stack.start_worker()
    rec = register(sim, webs[0], B, 1)
    sim.latency_s = 0.5
    statuses = click_together(webs, B, rec.call_sid, 30)
    assert set(statuses) <= {200, 202} and len(statuses) == 30
    for web in webs:
        assert play_until_stored(web, B, rec.call_sid).content == media_bytes(rec)
    # And asking again once stored never goes back to Twilio.
    for _ in range(5):
        assert play(webs[1], B, rec.call_sid).status_code == 200
    assert sim.downloads(rec.recording_sid) == 1
    assert sim.media_requests(rec.recording_sid) == 1


def test_listing_page_and_status_never_download(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web(PREFETCH_ON_WEBHOOK="false")
    stack.start_worker()
    recs = [register(sim, web, B, i) for i in range(5)]
    listed = httpx.get(f"{web}/api/calls", headers=auth(B)).json()
    assert [c["call_sid"] for c in listed["calls"]] == [r.call_sid for r in reversed(recs)]
    assert all(c["recording"]["status"] == "available" for c in listed["calls"])
    assert httpx.get(f"{web}/").status_code == 200
    for rec in recs:
        status = httpx.get(f"{web}/api/calls/{rec.call_sid}/recording/status", headers=auth(B))
        assert status.json() == {"call_sid": rec.call_sid, "status": "available", "position": None}
    page = httpx.get(f"{web}/api/calls?limit=2", headers=auth(B)).json()
    rest = httpx.get(f"{web}/api/calls?limit=10&before={page['next']}", headers=auth(B)).json()
    assert [c["call_sid"] for c in page["calls"] + rest["calls"]] == [
        r.call_sid for r in reversed(recs)
    ]
    assert rest["next"] is None
    assert sim.total_downloads() == 0
    assert sim.listing_requests() == 0


def test_prefetch_on_completed_webhook_downloads_once(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web()
    stack.start_worker()
    rec = register(sim, web, B, 3)
    hook = f"{web}/webhooks/twilio/{B}/recording-status"
    assert sim.send_recording_status(hook, rec) == 204  # Twilio redelivers
    wait_for(lambda: (stack.recordings_dir / f"{rec.call_sid}.mp3").exists(), "prefetch")
    assert play(web, B, rec.call_sid).status_code == 200
    assert sim.send_recording_status(hook, rec) == 204
    assert sim.downloads(rec.recording_sid) == 1


def test_range_answers_come_from_storage(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web()
    stack.start_worker()
    rec = register(sim, web, B, 4, size_bytes=100_000)
    data = media_bytes(rec)
    play_until_stored(web, B, rec.call_sid)
    url = f"{web}/api/calls/{rec.call_sid}/recording"
    r = httpx.get(url, headers={**auth(B), "Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == data[:100]
    assert r.headers["content-range"] == f"bytes 0-99/{len(data)}"
    r = httpx.get(url, headers={**auth(B), "Range": "bytes=-500"})
    assert r.status_code == 206 and r.content == data[-500:]
    r = httpx.get(url, headers={**auth(B), "Range": "bytes=99000-"})
    assert r.status_code == 206 and r.content == data[99000:]
    r = httpx.get(url, headers={**auth(B), "Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    r = httpx.head(url, headers=auth(B))
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["accept-ranges"] == "bytes" and r.headers["content-type"] == "audio/mpeg"
    assert r.headers["etag"] and r.headers["last-modified"]
    r = httpx.get(f"{web}/api/calls/{rec.call_sid}/download", params={"token": _tok()})
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-disposition"] == f'attachment; filename="{rec.call_sid}.mp3"'
    assert sim.media_requests(rec.recording_sid) == 1


def _tok() -> str:
    from tests.stack import token

    return token(B)


def test_child_call_plays_its_parents_recording(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web(PREFETCH_ON_WEBHOOK="false")
    stack.start_worker()
    parent = register(sim, web, B, 10)
    child_sid = call_sid(11)
    assert (
        sim.send_call_status(
            f"{web}/webhooks/twilio/{B}/call-status",
            call_sid=child_sid,
            parent_call_sid=parent.call_sid,
            direction="outbound-dial",
        )
        == 204
    )
    body = play_until_stored(web, B, child_sid).content
    assert body == media_bytes(parent)
    assert (stack.recordings_dir / f"{parent.call_sid}.mp3").exists()
    assert not (stack.recordings_dir / f"{child_sid}.mp3").exists()


def test_call_known_only_from_status_callback_finds_its_recording(
    stack: Stack, sim: Simulator
) -> None:
    web = stack.start_web()
    stack.start_worker()
    rec = register(sim, web, B, 20, recording_webhook=False)
    assert play_until_stored(web, B, rec.call_sid).content == media_bytes(rec)
    assert sim.listing_requests() == 1


def test_second_business_is_not_held_up_by_the_first(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web(PREFETCH_ON_WEBHOOK="false")
    stack.start_worker()
    busy = [register(sim, web, "busy", i) for i in range(12)]
    other = register(sim, web, "other", 99)
    sim.latency_s = 1.0
    for rec in busy:
        play(web, "busy", rec.call_sid)
    play(web, "other", other.call_sid)
    play_until_stored(web, "other", other.call_sid)
    # "other" went ahead of busy's queue: beyond its 3 slots, busy's requests start only as
    # earlier ones finish (1 s each), while "other" had a slot at once. An order, not a
    # timing: a loaded machine slows both sides alike.
    started = sim.first_media_request_times()
    behind = [r for r in busy if started.get(r.call_sid, math.inf) > started[other.call_sid]]
    assert len(behind) >= 3, (len(behind), started)
    assert sim.max_concurrent("busy") <= 3


def test_tenant_isolation_and_bad_input(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web(PREFETCH_ON_WEBHOOK="false")
    stack.start_worker()
    rec = register(sim, web, "alice", 30)
    theirs = httpx.get(f"{web}/api/calls/{rec.call_sid}/recording", headers=auth("mallory"))
    unknown = httpx.get(f"{web}/api/calls/{call_sid(31)}/recording", headers=auth("mallory"))
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json()
    assert httpx.get(f"{web}/api/calls", headers=auth("mallory")).json()["calls"] == []
    bad = httpx.get(f"{web}/api/calls/CA123/recording", headers=auth("alice"))
    assert bad.status_code == 400 and "call_sid" in bad.json()["error"]
    assert httpx.get(f"{web}/api/calls").status_code == 401
    assert httpx.get(f"{web}/api/calls", params={"token": "nonsense"}).status_code == 401
    from tests.stack import token

    expired = token("alice", ttl_s=-10)
    assert httpx.get(f"{web}/api/calls", params={"token": expired}).status_code == 401
    assert sim.total_downloads() == 0


def test_unsigned_or_wrongly_signed_webhooks_record_nothing(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web()
    url = f"{web}/webhooks/twilio/{B}/call-status"
    form = {"CallSid": call_sid(40), "CallStatus": "completed", "SequenceNumber": "1"}
    assert httpx.post(url, data=form).status_code == 403
    assert httpx.post(url, data=form, headers={"X-Twilio-Signature": "bm90LWl0"}).status_code == 403
    assert httpx.get(f"{web}/api/calls", headers=auth(B)).json()["calls"] == []


def test_out_of_order_call_status_keeps_the_newest(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web()
    url = f"{web}/webhooks/twilio/{B}/call-status"
    sid = call_sid(50)
    assert (
        sim.send_call_status(url, call_sid=sid, call_status="completed", sequence_number=3) == 204
    )
    assert sim.send_call_status(url, call_sid=sid, call_status="ringing", sequence_number=1) == 204
    assert (
        sim.send_call_status(url, call_sid=sid, call_status="completed", sequence_number=3) == 204
    )
    calls = httpx.get(f"{web}/api/calls", headers=auth(B)).json()["calls"]
    assert len(calls) == 1 and calls[0]["status"] == "completed"
