"""Several recordings per call through real processes: a <Dial> recording and a
voicemail each play their own bytes, the primary as <call_sid>.mp3; a conference
recording is stored once and played from every participant's call."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.helpers import call_sid, rec_sid
from tests.stack import Stack, auth, wait_for
from twilio_sim import SimRecording, Simulator, media_bytes

B = "biz-multi"


def _hooks(web: str) -> str:
    return f"{web}/webhooks/twilio/{B}"


def _call(sim: Simulator, web: str, sid: str, n: int) -> None:
    stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(1_700_000_000 + n))
    status = sim.send_call_status(
        f"{_hooks(web)}/call-status", call_sid=sid, timestamp=stamp, sequence_number=1
    )
    assert status == 204


def _get(web: str, path: str) -> httpx.Response:
    return httpx.get(f"{web}{path}", headers=auth(B), timeout=10)


def _until_stored(web: str, path: str) -> httpx.Response:
    answer: list[httpx.Response] = []

    def stored() -> bool:
        r = _get(web, path)
        assert r.status_code in (200, 202), (r.status_code, r.text)
        answer[:] = [r]
        return r.status_code == 200

    wait_for(stored, f"{path} stored", 60)
    return answer[0]


def _listed(web: str, sid: str) -> dict[str, Any]:
    calls = _get(web, "/api/calls").json()["calls"]
    found: dict[str, Any] = next(c for c in calls if c["call_sid"] == sid)
    return found


def test_dial_recording_and_voicemail_each_play(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web()
    stack.start_worker()
    sid = call_sid(1)
    start = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)
    dial = SimRecording(
        B, sid, rec_sid(1), size_bytes=20_000, duration_s=14, source="DialVerb", created_at=start
    )
    voicemail = SimRecording(
        B,
        sid,
        rec_sid(2),
        size_bytes=9_000,
        duration_s=6,
        source="RecordVerb",
        created_at=start + timedelta(seconds=20),
    )
    sim.add_recording(dial)
    sim.add_recording(voicemail)
    _call(sim, web, sid, 1)
    hook = f"{_hooks(web)}/recording-status"
    assert sim.send_recording_status(hook, dial, status="in-progress") == 204
    assert sim.send_recording_status(hook, dial) == 204
    assert sim.send_recording_status(hook, voicemail) == 204
    assert sim.send_recording_status(hook, voicemail) == 204  # redelivered

    # The call plays its primary, the first to complete: the Dial leg.
    assert _until_stored(web, f"/api/calls/{sid}/recording").content == media_bytes(dial)
    one = _until_stored(web, f"/api/calls/{sid}/recordings/{voicemail.recording_sid}")
    assert one.content == media_bytes(voicemail)
    again = _get(web, f"/api/calls/{sid}/recordings/{dial.recording_sid}")
    assert again.content == media_bytes(dial)
    files = sorted(p.name for p in stack.recordings_dir.glob("*.mp3"))
    assert files == sorted([f"{sid}.mp3", f"{voicemail.recording_sid}.mp3"])
    assert sim.downloads(dial.recording_sid) == 1 and sim.downloads(voicemail.recording_sid) == 1

    listed = _listed(web, sid)
    # The call's recording is the primary, with its own length (not the voicemail's).
    assert listed["recording"]["recording_sid"] == dial.recording_sid
    assert listed["recording"]["duration"] == 14
    rows = {r["recording_sid"]: r for r in listed["recordings"]}
    assert [r["recording_sid"] for r in listed["recordings"]] == [
        dial.recording_sid,
        voicemail.recording_sid,
    ]
    assert rows[dial.recording_sid] | {"twilio_copy": "kept"} == {
        "recording_sid": dial.recording_sid,
        "status": "ready",
        "duration": 14,
        "channels": 1,
        "source": "DialVerb",
        "error_code": None,
        "why": None,
        "started_at": "2025-05-01T09:00:00Z",
        "conference_sid": None,
        "primary": True,
        "twilio_copy": "kept",
    }
    assert rows[voicemail.recording_sid]["primary"] is False
    assert rows[voicemail.recording_sid]["duration"] == 6
    assert rows[voicemail.recording_sid]["status"] == "ready"

    download = _get(web, f"/api/calls/{sid}/recordings/{voicemail.recording_sid}/download")
    assert download.headers["content-disposition"] == (
        f'attachment; filename="{voicemail.recording_sid}.mp3"'
    )
    status = _get(web, f"/api/calls/{sid}/recordings/{voicemail.recording_sid}/status").json()
    assert status == {"call_sid": sid, "status": "ready", "position": None}


def test_unplayable_recordings_say_why(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web(PREFETCH_ON_WEBHOOK="false")
    sid = call_sid(3)
    _call(sim, web, sid, 3)
    short = SimRecording(B, sid, rec_sid(3), duration_s=0)
    silent = SimRecording(B, sid, rec_sid(4), duration_s=4)
    hook = f"{_hooks(web)}/recording-status"
    assert sim.send_recording_status(hook, short, status="absent", error_code="16101") == 204
    assert sim.send_recording_status(hook, silent, status="absent", error_code="16102") == 204
    listed = _listed(web, sid)
    assert [(r["status"], r["error_code"], r["why"]) for r in listed["recordings"]] == [
        ("none", 16101, "too short"),
        ("none", 16102, "silent"),
    ]
    assert listed["recording"]["status"] == "none"
    assert _get(web, f"/api/calls/{sid}/recording").status_code == 404
    unknown = _get(web, f"/api/calls/{sid}/recordings/{rec_sid(99)}")
    assert unknown.status_code == 404
    assert _get(web, f"/api/calls/{sid}/recordings/RE123").status_code == 400


def test_conference_recording_stored_once_played_from_each_participant(
    stack: Stack, sim: Simulator
) -> None:
    web = stack.start_web()
    stack.start_worker()
    conference = "CF" + "c" * 32
    alice, bob = call_sid(10), call_sid(11)
    for n, sid in ((10, alice), (11, bob)):
        _call(sim, web, sid, n)
        joined = sim.send_conference_status(
            f"{_hooks(web)}/conference-status", conference_sid=conference, call_sid=sid
        )
        assert joined == 204
    rec = SimRecording(
        B, "", rec_sid(10), size_bytes=30_000, conference_sid=conference, source="Conference"
    )
    sim.add_recording(rec)
    assert sim.send_recording_status(f"{_hooks(web)}/recording-status", rec) == 204

    for sid in (alice, bob):
        assert _until_stored(web, f"/api/calls/{sid}/recording").content == media_bytes(rec)
        one = _get(web, f"/api/calls/{sid}/recordings/{rec.recording_sid}")
        assert one.content == media_bytes(rec)
        listed = _listed(web, sid)
        assert [
            (r["recording_sid"], r["source"], r["conference_sid"]) for r in listed["recordings"]
        ] == [(rec.recording_sid, "Conference", conference)]
    assert sim.downloads(rec.recording_sid) == 1
    assert sorted(p.name for p in stack.recordings_dir.glob("*.mp3")) == [
        f"{rec.recording_sid}.mp3"
    ]


def test_conference_bad_input(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web()
    hook = f"{_hooks(web)}/recording-status"
    unknown = SimRecording(B, "", rec_sid(20), conference_sid="CF" + "d" * 32)
    assert sim.send_recording_status(hook, unknown) == 404
    neither = SimRecording(B, "", rec_sid(21))
    assert sim.send_recording_status(hook, neither) == 400
    conf_hook = f"{_hooks(web)}/conference-status"
    no_call = sim.send_conference_status(conf_hook, conference_sid="CF" + "e" * 32, call_sid="")
    assert no_call == 400
    bad_conf = sim.send_conference_status(conf_hook, conference_sid="CF12", call_sid=call_sid(1))
    assert bad_conf == 400
    started = sim.send_conference_status(
        conf_hook, conference_sid="CF" + "e" * 32, call_sid="", event="conference-start"
    )
    assert started == 204
    # Registered now: its recordings are accepted.
    known = SimRecording(B, "", rec_sid(22), conference_sid="CF" + "e" * 32)
    assert sim.send_recording_status(hook, known) == 204
