"""STORAGE=s3 end to end: real web and worker processes, the Twilio simulator, and moto's
S3 server on loopback. Each process gets its own RECORDINGS_DIR (its local cache), as on
hosts that share no disk."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis

from callrec.local_s3 import LocalS3
from calls import keys
from calls.redis_values import entries
from tests.helpers import click_together, play, register
from tests.stack import Stack, auth, wait_for
from twilio_sim import Simulator, media_bytes

B = "biz1"


def use_s3(stack: Stack, server: LocalS3, bucket: str, **extra: str) -> None:
    stack.env_overrides.update(server.env(bucket))
    stack.env_overrides.update(PREFETCH_ON_WEBHOOK="false", **extra)


def cache_dir(stack: Stack, name: str) -> str:
    return str(stack.tmp / name)


def play_until_served(web: str, business: str, sid: str, timeout_s: float = 60) -> httpx.Response:
    answer: list[httpx.Response] = []

    def served() -> bool:
        r = play(web, business, sid)
        assert r.status_code in (200, 202, 302), (r.status_code, r.text)
        answer[:] = [r]
        return r.status_code != 202

    wait_for(served, f"{sid} to be served", timeout_s)
    return answer[0]


def recording_status(web: str, business: str, sid: str) -> str:
    calls = httpx.get(f"{web}/api/calls", headers=auth(business), timeout=10).json()["calls"]
    status: str = next(c["recording"]["status"] for c in calls if c["call_sid"] == sid)
    return status


def test_redirect_proxy_and_cache_hit_serve_ranges(
    stack: Stack, sim: Simulator, local_s3: LocalS3, s3_bucket: str
) -> None:
    use_s3(stack, local_s3, s3_bucket, S3_PREFIX="recs/")
    worker_cache = cache_dir(stack, "worker-cache")
    # Room for one 64 KiB recording: the second publish evicts the first.
    stack.start_worker(RECORDINGS_DIR=worker_cache, CACHE_MAX_BYTES="100000")
    redirect_web = stack.start_web(SERVE_S3_VIA="redirect", RECORDINGS_DIR=cache_dir(stack, "r"))
    proxy_web = stack.start_web(SERVE_S3_VIA="proxy", RECORDINGS_DIR=cache_dir(stack, "p"))
    local_web = stack.start_web(SERVE_S3_VIA="proxy", RECORDINGS_DIR=worker_cache)
    first, second = register(sim, proxy_web, B, 1), register(sim, proxy_web, B, 2)
    play_until_served(proxy_web, B, first.call_sid)
    play_until_served(proxy_web, B, second.call_sid)
    s3 = local_s3.client()
    for rec in (first, second):
        obj = s3.get_object(Bucket=s3_bucket, Key=f"recs/{rec.call_sid}.mp3")
        assert obj["Body"].read() == media_bytes(rec)
    cached = [p.name for p in Path(worker_cache).glob("*.mp3")]
    assert len(cached) == 1, cached

    data = media_bytes(first)
    size = len(data)
    # Redirect: the tenant check first, then a short-lived SigV4 URL on the S3 server.
    assert play(redirect_web, "mallory", first.call_sid).status_code == 404
    r = play(redirect_web, B, first.call_sid)
    assert r.status_code == 302 and r.headers["cache-control"] == "no-store"
    location = r.headers["location"]
    assert location.startswith(f"{local_s3.url}/{s3_bucket}/recs/{first.call_sid}.mp3?")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in location and "X-Amz-Expires=300" in location
    ranged = httpx.get(location, headers={"Range": "bytes=100-1099"}, timeout=10)
    assert ranged.status_code == 206
    assert ranged.content == data[100:1100]
    assert ranged.headers["content-range"] == f"bytes 100-1099/{size}"
    download = httpx.get(
        f"{redirect_web}/api/calls/{first.call_sid}/download",
        headers=auth(B),
        follow_redirects=True,
        timeout=10,
    )
    assert download.status_code == 200 and download.content == data
    assert download.headers["content-disposition"] == (
        f'attachment; filename="{first.call_sid}.mp3"'
    )

    # Proxy: the object streamed through the app, Range passed on to S3.
    whole = play(proxy_web, B, first.call_sid)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-length"] == str(size)
    etag = whole.headers["etag"]
    tail = play(proxy_web, B, first.call_sid, Range="bytes=-500")
    assert tail.status_code == 206 and tail.content == data[-500:]
    assert tail.headers["content-range"] == f"bytes {size - 500}-{size - 1}/{size}"
    assert tail.headers["accept-ranges"] == "bytes" and tail.headers["etag"] == etag
    assert tail.headers["content-length"] == "500" and "last-modified" in tail.headers
    beyond = play(proxy_web, B, first.call_sid, Range=f"bytes={size + 10}-")
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"
    assert play(proxy_web, B, first.call_sid, **{"If-None-Match": etag}).status_code == 304
    head = httpx.head(
        f"{proxy_web}/api/calls/{first.call_sid}/recording",
        headers={**auth(B), "Range": "bytes=0-99"},
        timeout=10,
    )
    assert head.status_code == 206 and head.headers["content-length"] == "100"

    # A web sharing the worker's disk serves its cached copy from disk (a disk ETag:
    # size-mtime, not S3's MD5) and proxies the evicted one from S3 (S3's ETag).
    for rec in (first, second):
        answer = play(local_web, B, rec.call_sid, Range="bytes=0-9")
        assert answer.status_code == 206 and answer.content == media_bytes(rec)[:10]
        from_disk = f"{rec.call_sid}.mp3" in cached
        assert ("-" in answer.headers["etag"]) == from_disk
    assert sim.downloads(first.recording_sid) == sim.downloads(second.recording_sid) == 1


def test_two_workers_with_separate_caches_download_once_and_both_webs_serve(
    stack: Stack, sim: Simulator, local_s3: LocalS3, s3_bucket: str
) -> None:
    use_s3(stack, local_s3, s3_bucket)
    caches = [cache_dir(stack, "w0"), cache_dir(stack, "w1")]
    for cache in caches:
        stack.start_worker(RECORDINGS_DIR=cache)
    webs = [
        stack.start_web(SERVE_S3_VIA="redirect", RECORDINGS_DIR=cache_dir(stack, "web0")),
        stack.start_web(SERVE_S3_VIA="proxy", RECORDINGS_DIR=cache_dir(stack, "web1")),
    ]
    rec = register(sim, webs[0], B, 7)
    sim.latency_s = 0.5
    statuses = click_together(webs, B, rec.call_sid, 20)
    assert set(statuses) <= {200, 202, 302} and len(statuses) == 20
    data = media_bytes(rec)
    redirected = play_until_served(webs[0], B, rec.call_sid)
    assert redirected.status_code == 302
    assert httpx.get(redirected.headers["location"], timeout=10).content == data
    proxied = play_until_served(webs[1], B, rec.call_sid)
    assert proxied.status_code == 200 and proxied.content == data
    for web in webs:  # asking again once stored never goes back to Twilio
        assert play(web, B, rec.call_sid).status_code in (200, 302)
    assert sim.downloads(rec.recording_sid) == 1
    assert sim.media_requests(rec.recording_sid) == 1
    holders = [c for c in caches if (Path(c) / f"{rec.call_sid}.mp3").exists()]
    assert len(holders) == 1, holders


@pytest.mark.parametrize("fault", ["missing_bucket", "access_denied"])
def test_storage_failure_fails_the_request_and_frees_the_slot(
    stack: Stack,
    sim: Simulator,
    local_s3: LocalS3,
    s3_bucket: str,
    redis_url: str,
    fault: str,
) -> None:
    env = local_s3.env(s3_bucket)
    if fault == "missing_bucket":
        env["S3_BUCKET"] = "no-such-bucket-anywhere"
        reason = "S3_bucket_'no-such-bucket-anywhere'_does_not_exist"
    else:
        iam = local_s3.service_client("iam")
        iam.create_user(UserName="no-rights")
        key = iam.create_access_key(UserName="no-rights")["AccessKey"]
        env.update(
            AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"]
        )
        reason = f"access_to_S3_bucket_'{s3_bucket}'_denied"
        local_s3.require_auth(0)  # from now on moto checks keys and IAM policies
    try:
        stack.env_overrides.update(env)
        stack.env_overrides.update(DOWNLOAD_MAX_ATTEMPTS="2")
        web = stack.start_web()
        stack.start_worker()
        rec = register(sim, web, B, 9)  # the recording webhook requests the download
        wait_for(lambda: recording_status(web, B, rec.call_sid) == "failed", "failed status")
        assert f"RECORDING_FAILED business_id={B} sid={rec.call_sid} attempts=2" in (
            stack.worker_logs()
        )
        assert f"reason=storage:_{reason}" in stack.worker_logs()
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        letters = entries(client.xrange(keys.DEAD_LETTERS))
        assert [(f["sid"], f["attempts"]) for _id, f in letters] == [(rec.call_sid, "2")]
        assert reason.replace("_", " ") in letters[0][1]["reason"]
        wait_for(lambda: client.scard(keys.slots(B)) == 0, "the slot to be released")
        client.close()
        if fault == "access_denied":
            # The web cannot tell whether it is stored: a retryable 503, not a 500.
            answer = play(web, B, rec.call_sid)
            assert answer.status_code == 503 and answer.headers["retry-after"]
            assert "denied" in answer.json()["error"]
            assert sim.downloads(rec.recording_sid) == 0  # it never got past the HEAD
    finally:
        if fault == "access_denied":
            local_s3.require_auth(10**9)
