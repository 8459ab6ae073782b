"""The simulator's ``hold_media``: requests wait, counted as in flight, then go on in the
order they arrived; and its media bodies are MP3 frames a browser can decode."""

from __future__ import annotations

import threading

import httpx

from tests.stack import wait_for
from twilio_sim import SimRecording, Simulator, media_bytes

B = "b1"


def test_held_requests_wait_then_go_in_arrival_order(sim: Simulator) -> None:
    recs = [SimRecording(B, f"CA{i:032x}", f"RE{i:032x}", size_bytes=20_000) for i in range(3)]
    for rec in recs:
        sim.add_recording(rec)
    sim.hold_media = True
    bodies: dict[str, bytes] = {}

    def fetch(rec: SimRecording) -> None:
        account = f"{sim.base_url}/2010-04-01/Accounts/{sim.account_sid}"
        url = f"{account}/Recordings/{rec.recording_sid}.mp3"
        r = httpx.get(url, auth=(sim.account_sid, sim.auth_token), timeout=30)
        bodies[rec.recording_sid] = r.content

    threads = []
    for i, rec in enumerate(recs):
        threads.append(threading.Thread(target=fetch, args=(rec,)))
        threads[-1].start()

        def arrived(n: int = i + 1) -> bool:
            return sim.current_concurrent(B) == n

        wait_for(arrived, "the request to arrive")
    assert sim.total_downloads() == 0 and bodies == {}
    sim.hold_media = False
    for t in threads:
        t.join(30)
    assert sim.order_started(B) == [r.call_sid for r in recs]
    assert all(bodies[r.recording_sid] == media_bytes(r) for r in recs)


def test_media_is_mpeg_audio_frames() -> None:
    rec = SimRecording(B, "CA" + "1" * 32, "RE" + "1" * 32, size_bytes=64 * 1024)
    body = media_bytes(rec)
    assert len(body) == rec.size_bytes and body.startswith(b"ID3")
    tag = body[6:10]
    start = 10 + sum(b << (7 * (3 - i)) for i, b in enumerate(tag))  # syncsafe tag size
    frames = body[start:]
    assert len(frames) % 417 == 0
    heads = {frames[i : i + 4] for i in range(0, len(frames), 417)}
    assert heads == {b"\xff\xfb\x90\xc4"}  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, mono
