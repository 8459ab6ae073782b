"""Redis going away and coming back (AOF on, same port) in the middle of a run: the web
answers 503 with Retry-After on every route that needs Redis (never 500), workers keep
retrying, and once Redis is back every request completes with complete files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from twilio.request_validator import RequestValidator

from callrec.embedded_redis import EmbeddedRedis
from calls import keys
from tests.helpers import call_sid, play, register
from tests.stack import Stack, auth, token, wait_for
from twilio_sim import Simulator, media_bytes
from twilio_sim.webhooks import call_status_params, recording_status_params


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(data_dir=tmp_path / "redis-data", appendonly=True)
    server.data_dir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def signed_post(sim: Simulator, url: str, params: dict[str, str]) -> httpx.Response:
    signature = RequestValidator(sim.auth_token).compute_signature(url, params)
    return httpx.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)


def assert_unavailable(response: httpx.Response, what: str) -> None:
    assert response.status_code == 503, (what, response.status_code, response.text)
    assert int(response.headers["retry-after"]) > 0, what


def test_redis_restart_with_aof_mid_run(
    tmp_path: Path, aof_redis: EmbeddedRedis, sim: Simulator
) -> None:
    stack = Stack.around(
        sim,
        tmp=tmp_path,
        redis_url=aof_redis.url,
        PREFETCH_ON_WEBHOOK="false",
        INFLIGHT_TTL_SECONDS="3",
        RECONCILE_INTERVAL_MS="300",
        CLAIM_MIN_IDLE_MS="1000",
    )
    try:
        _run(stack, aof_redis, sim)
    finally:
        stack.stop()


def _run(stack: Stack, server: EmbeddedRedis, sim: Simulator) -> None:
    b = "aof"
    web = stack.start_web()
    workers = [stack.start_worker(), stack.start_worker()]
    recs = [register(sim, web, b, 700 + i, size_bytes=96 * 1024) for i in range(6)]
    sim.chunk_size = 16 * 1024
    sim.chunk_delay_s = 0.1
    for rec in recs:
        assert play(web, b, rec.call_sid).status_code == 202
    wait_for(lambda: sim.current_concurrent(b) > 0, "downloads to be running")

    server.stop()  # SIGTERM: Redis flushes its AOF, as after a clean restart

    sid = recs[0].call_sid
    api = {
        "list": f"{web}/api/calls",
        "play": f"{web}/api/calls/{sid}/recording",
        "download": f"{web}/api/calls/{sid}/download",
        "status": f"{web}/api/calls/{sid}/recording/status",
        "events": f"{web}/api/events",
        "metrics": f"{web}/metrics",
        "readyz": f"{web}/readyz",
    }
    for what, url in api.items():
        assert_unavailable(httpx.get(url, headers=auth(b), timeout=10), what)
    assert_unavailable(httpx.head(api["play"], headers=auth(b), timeout=10), "head")
    assert_unavailable(httpx.get(api["play"], params={"token": token(b)}, timeout=10), "?token")
    hooks = f"{web}/webhooks/twilio/{b}"
    call_params = call_status_params(
        account_sid=sim.account_sid,
        call_sid=call_sid(799),
        sequence_number=1,
    )
    assert_unavailable(signed_post(sim, f"{hooks}/call-status", call_params), "call-status")
    rec_params = recording_status_params(
        recs[0],
        account_sid=sim.account_sid,
        base_url=sim.base_url,
        status="completed",
        error_code="",
    )
    assert_unavailable(signed_post(sim, f"{hooks}/recording-status", rec_params), "rec-status")
    # What needs no Redis keeps answering; bad input is still a 4xx, not a 503.
    assert httpx.get(f"{web}/healthz").status_code == 200
    assert httpx.get(f"{web}/").status_code == 200
    assert httpx.get(api["list"]).status_code == 401
    bad = httpx.get(f"{web}/api/calls/nonsense/recording", headers=auth(b))
    assert bad.status_code == 400
    wait_for(
        lambda: all("redis unreachable" in w.log() for w in workers), "workers to notice outage"
    )

    server.start()  # same port, same data directory: the AOF is replayed

    wait_for(lambda: httpx.get(api["readyz"]).status_code == 200, "readyz after restart")
    for rec in recs:
        path = stack.recordings_dir / f"{rec.call_sid}.mp3"
        wait_for(path.exists, f"{rec.call_sid} stored after the restart", 60)
        assert path.read_bytes() == media_bytes(rec)
        assert sim.completed_downloads(rec.recording_sid) >= 1
        assert play(web, b, rec.call_sid).status_code == 200
    # The registry survived the restart: every call is still listed.
    listed = httpx.get(api["list"], headers=auth(b)).json()["calls"]
    assert sorted(c["call_sid"] for c in listed) == sorted(r.call_sid for r in recs)
    assert all(w.alive() for w in workers), [w.log() for w in workers]
    client = redis.Redis.from_url(server.url)
    wait_for(lambda: client.scard(keys.slots(b)) == 0, "slots released")
    assert client.llen(keys.queue(b)) == 0
    client.close()
    assert all(not p.name.endswith(".part") for p in stack.recordings_dir.glob("CA*"))
