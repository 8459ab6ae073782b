"""Large simulated recordings are generated as they are sent (the bench downloads 500 MB
through the simulator), and their bytes are the same however they are cut into chunks."""

from __future__ import annotations

import time

import httpx

from twilio_sim import Fault, SimRecording, Simulator, media_bytes
from twilio_sim.models import STREAMED_ABOVE_BYTES, media_chunks

LARGE = SimRecording("biz-large", "CA" + "1" * 32, "RE" + "1" * 32, size_bytes=9 * 1024 * 1024 + 7)


def test_large_media_chunks_are_exact_and_bounded() -> None:
    assert LARGE.size_bytes > STREAMED_ABOVE_BYTES
    whole = media_bytes(LARGE)
    assert len(whole) == LARGE.size_bytes and whole.startswith(b"ID3")
    for chunk_size in (1000, 64 * 1024, 3 * 1024 * 1024):
        chunks = list(media_chunks(LARGE, chunk_size))
        assert all(len(c) <= chunk_size for c in chunks)
        assert b"".join(chunks) == whole
    other = SimRecording("biz-large", "CA" + "2" * 32, "RE" + "2" * 32, size_bytes=LARGE.size_bytes)
    assert media_bytes(other)[10:4096] != whole[10:4096]


def test_large_media_over_http_and_cut_off() -> None:
    with Simulator() as sim:
        sim.add_recording(LARGE)
        sim.chunk_size = 256 * 1024
        url = sim.recording_url(LARGE.recording_sid) + ".mp3"
        creds = (sim.account_sid, sim.auth_token)
        before = time.monotonic()
        response = httpx.get(url, auth=creds, timeout=30)
        assert response.status_code == 200
        assert response.content == media_bytes(LARGE)
        first = sim.first_media_request_times()[LARGE.call_sid]
        assert before <= first <= time.monotonic()
        sim.set_faults(LARGE.recording_sid, [Fault.cut_off(5 * 1024 * 1024 + 3)])
        received = bytearray()
        try:
            with httpx.stream("GET", url, auth=creds, timeout=30) as r:
                for chunk in r.iter_bytes():
                    received += chunk
        except httpx.HTTPError:
            pass
        assert bytes(received) == media_bytes(LARGE)[: 5 * 1024 * 1024 + 3]
        # Only the first request's time is kept: it is what queueing delay is measured to.
        assert sim.first_media_request_times()[LARGE.call_sid] == first
