"""The recording lifecycle through real processes: Twilio's copy deleted only once
callrec's is durable, and erasure that nothing brings back (guarantee 11)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import httpx
import redis

from callrec.local_s3 import LocalS3
from calls import keys
from tests.helpers import play, play_until_stored, register
from tests.stack import ROOT, Stack, auth, wait_for
from twilio_sim import SimRecording, Simulator, media_bytes

B = "biz-life"


def _erase(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callrec.cli", "erase", "--business", B, *args],
        env=stack.env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _status(web: str, sid: str) -> str:
    r = httpx.get(f"{web}/api/calls/{sid}/recording/status", headers=auth(B), timeout=10)
    assert r.status_code == 200, r.text
    word: str = r.json()["status"]
    return word


def test_twilio_copy_deleted_once_after_the_file_is_durable(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web(DELETE_FROM_TWILIO="true")
    stack.start_worker(DELETE_FROM_TWILIO="true", LIFECYCLE_INTERVAL_MS="100")
    # What callrec held at the moment of each DELETE: the whole file, under its final name.
    held_at_delete: dict[str, bytes | None] = {}
    lock = threading.Lock()

    def on_delete(rec: SimRecording) -> None:
        path = stack.recordings_dir / f"{rec.call_sid}.mp3"
        with lock:
            held_at_delete[rec.recording_sid] = path.read_bytes() if path.exists() else None

    sim.on_delete = on_delete
    recs = [register(sim, web, B, i) for i in range(4)]  # prefetch: the webhooks ask
    wait_for(lambda: sim.total_deletes() == 4, "four deletes at Twilio")
    for rec in recs:
        assert sim.deletes(rec.recording_sid) == 1
        assert held_at_delete[rec.recording_sid] == media_bytes(rec)
        # Stored before the delete, so it plays from callrec's copy.
        assert play(web, B, rec.call_sid).content == media_bytes(rec)
    calls = httpx.get(f"{web}/api/calls", headers=auth(B), timeout=10).json()["calls"]
    assert {c["recording"]["twilio_copy"] for c in calls} == {"deleted"}
    metrics = httpx.get(f"{web}/metrics", timeout=10).text
    assert 'callrec_twilio_deletes_total{outcome="deleted"} 4.0' in metrics
    # The copy at Twilio is gone; nothing ever asks for it again.
    assert all(sim.downloads(r.recording_sid) == 1 for r in recs)


def test_erased_recording_never_comes_back(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web()
    stack.start_worker(LIFECYCLE_INTERVAL_MS="100")
    rec = register(sim, web, B, 7)
    kept = register(sim, web, B, 8)
    assert play_until_stored(web, B, rec.call_sid).content == media_bytes(rec)
    play_until_stored(web, B, kept.call_sid)
    path = stack.recordings_dir / f"{rec.call_sid}.mp3"
    assert path.exists()

    done = _erase(stack, "--call", rec.call_sid)
    assert done.returncode == 0, done.stderr
    assert "erased: 1 recordings, 1 files removed" in done.stdout
    assert not path.exists()
    assert _status(web, rec.call_sid) == "erased"
    # Twilio's copy goes too (erasure deletes it whatever DELETE_FROM_TWILIO says).
    wait_for(lambda: sim.deletes(rec.recording_sid) == 1, "Twilio's copy deleted")

    # A replayed completed webhook and plays bring nothing back.
    hooks = f"{web}/webhooks/twilio/{B}"
    assert sim.send_recording_status(f"{hooks}/recording-status", rec) == 204
    for _ in range(3):
        answer = play(web, B, rec.call_sid)
        assert answer.status_code == 404
        assert "erased" in answer.json()["error"]
    # A worker that handles everything queued so far (the other call's play) has also
    # seen anything the replay could have asked for.
    assert play(web, B, kept.call_sid).status_code == 200
    client = redis.Redis.from_url(stack.redis_url)
    wait_for(
        lambda: client.xpending(keys.EVENTS, keys.EVENTS_GROUP)["pending"] == 0,
        "the stream drained",
    )
    assert sim.media_requests(rec.recording_sid) == 1
    assert not path.exists()
    assert _status(web, rec.call_sid) == "erased"
    assert (stack.recordings_dir / f"{kept.call_sid}.mp3").exists()

    again = _erase(stack, "--call", rec.call_sid)
    assert again.returncode == 0 and "was erased already" in again.stdout
    unknown = _erase(stack, "--call", "CA" + "f" * 32)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == f"callrec erase: no call {'CA' + 'f' * 32} for business {B}"
    bad = _erase(stack, "--call", "CA123")
    assert bad.returncode == 2 and "--call must be a Twilio Call SID" in bad.stderr
    client.close()


def test_a_download_in_flight_when_erased_is_discarded(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web(PREFETCH_ON_WEBHOOK="false")
    stack.start_worker()
    rec = register(sim, web, B, 9)
    sim.hold_media = True  # the download is under way at Twilio, and stays there
    assert play(web, B, rec.call_sid).status_code == 202
    wait_for(lambda: sim.current_concurrent(B) == 1, "the download to reach Twilio")
    done = _erase(stack, "--call", rec.call_sid)
    assert done.returncode == 0, done.stderr
    sim.hold_media = False
    wait_for(lambda: sim.completed_downloads(rec.recording_sid) == 1, "the body sent")
    # The download ends discarded: its slot is released (a done event like any other),
    # nothing stored, nothing dead-lettered.
    client = redis.Redis.from_url(stack.redis_url)
    wait_for(lambda: client.scard(keys.slots(B)) == 0, "the slot released")
    assert client.xlen(keys.DEAD_LETTERS) == 0
    client.close()
    assert not (stack.recordings_dir / f"{rec.call_sid}.mp3").exists()
    assert _status(web, rec.call_sid) == "erased"
    assert play(web, B, rec.call_sid).status_code == 404
    assert "erased meanwhile" in stack.worker_logs()  # logged before the release


def test_erasure_removes_the_object_and_every_cache(
    stack: Stack, sim: Simulator, local_s3: LocalS3, s3_bucket: str
) -> None:
    stack.env_overrides.update(local_s3.env(s3_bucket))
    worker_cache = stack.tmp / "worker-cache"
    stack.start_worker(RECORDINGS_DIR=str(worker_cache))
    web = stack.start_web(SERVE_S3_VIA="proxy", RECORDINGS_DIR=str(worker_cache))
    rec = register(sim, web, B, 10)
    assert play_until_stored(web, B, rec.call_sid).content == media_bytes(rec)
    s3 = local_s3.client()
    assert s3.head_object(Bucket=s3_bucket, Key=f"{rec.call_sid}.mp3")["ContentLength"] > 0
    done = _erase(stack, "--call", rec.call_sid, RECORDINGS_DIR=str(worker_cache))
    assert done.returncode == 0, done.stderr
    assert s3.list_objects_v2(Bucket=s3_bucket).get("Contents", []) == []
    assert not (worker_cache / f"{rec.call_sid}.mp3").exists()
    hooks = f"{web}/webhooks/twilio/{B}"
    assert sim.send_recording_status(f"{hooks}/recording-status", rec) == 204
    assert play(web, B, rec.call_sid).status_code == 404
    assert sim.media_requests(rec.recording_sid) == 1


def test_workers_erase_expired_recordings_and_drop_old_calls(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web(PREFETCH_ON_WEBHOOK="false")
    # The helpers' calls started in November 2023: long expired under a 1-day retention.
    old = register(sim, web, B, 30)
    keeper = stack.start_worker()  # no retention: stores it
    assert play_until_stored(web, B, old.call_sid).content == media_bytes(old)
    keeper.popen.send_signal(signal.SIGTERM)
    keeper.popen.wait(timeout=30)
    stack.start_worker(RETENTION_DAYS="1", CALL_RETENTION_DAYS="3650", LIFECYCLE_INTERVAL_MS="100")
    wait_for(lambda: _status(web, old.call_sid) == "erased", "retention to erase it")
    assert not (stack.recordings_dir / f"{old.call_sid}.mp3").exists()
    wait_for(lambda: sim.deletes(old.recording_sid) == 1, "Twilio's copy deleted")
    assert play(web, B, old.call_sid).status_code == 404

    stack.start_worker(RETENTION_DAYS="1", CALL_RETENTION_DAYS="1", LIFECYCLE_INTERVAL_MS="100")

    def dropped() -> bool:
        r = httpx.get(f"{web}/api/calls/{old.call_sid}/recording/status", headers=auth(B))
        return r.status_code == 404

    wait_for(dropped, "call retention to drop the call record")
    assert httpx.get(f"{web}/api/calls", headers=auth(B), timeout=10).json()["calls"] == []
