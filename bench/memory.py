"""Scenario 5: peak RSS of a worker downloading a 500 MB recording, and of a web process
serving it in full and in ranges. Peak is the kernel's high-water mark (VmHWM), growth
is that minus the process's RSS just before, so no sampling can miss a spike."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import redis

from bench import procs
from bench.pipeline import fresh, register, wait_stored
from calls.events import request_download
from tests.stack import Stack, token
from twilio_sim import SimRecording, Simulator

SIZE = 500 * 1000 * 1000
BUSINESS = "9001"
SID = "CA" + "5" * 32


async def _request(redis_url: str) -> None:
    import redis.asyncio as aioredis

    from calls.shards import ShardMap

    client = aioredis.Redis.from_url(redis_url)
    await request_download(client, ShardMap(1), BUSINESS, SID, source="play")
    await client.aclose()


def _mib(kib: int) -> float:
    return kib / 1024


def run(stack: Stack, sim: Simulator, client: redis.Redis) -> dict[str, Any]:
    fresh(client, sim)
    rec = SimRecording(BUSINESS, SID, "RE" + "5" * 32, size_bytes=SIZE)
    register(sim, stack.redis_url, [rec])
    sim.chunk_size = 256 * 1024
    directory = stack.recordings_dir / "memory"
    worker = stack.start_worker(RECORDINGS_DIR=str(directory))
    pid = worker.popen.pid
    worker_before = procs.rss_kib(pid)
    asyncio.run(_request(stack.redis_url))
    wait_stored(directory, 1, timeout_s=240)
    worker_peak = procs.rss_kib(pid, "VmHWM")

    web, port = procs.start_uvicorn(
        stack, "ingest.app:app", workers=1, name="web-memory", RECORDINGS_DIR=str(directory)
    )
    url = f"http://127.0.0.1:{port}/api/calls/{SID}/recording"
    headers = {"Authorization": f"Bearer {token(BUSINESS)}"}
    with httpx.Client(timeout=120) as http:
        # Warm up (imports, first connection) before taking the baseline.
        assert http.get(url, headers={**headers, "Range": "bytes=0-1023"}).status_code == 206
        web_before = procs.rss_kib(web.popen.pid)
        received = 0
        with http.stream("GET", url, headers=headers) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes(1024 * 1024):
                received += len(chunk)
        assert received == SIZE, received
        web_full_peak = procs.rss_kib(web.popen.pid, "VmHWM")
        rng = random.Random(1)
        ranged = 0
        for length in [64 * 1024] * 50 + [8 * 1024 * 1024] * 10 + [200 * 1000 * 1000]:
            start = rng.randrange(0, SIZE - length)
            with http.stream(
                "GET", url, headers={**headers, "Range": f"bytes={start}-{start + length - 1}"}
            ) as r:
                assert r.status_code == 206
                for chunk in r.iter_bytes(1024 * 1024):
                    ranged += len(chunk)
        web_range_peak = procs.rss_kib(web.popen.pid, "VmHWM")
    stack.stop()
    stack.procs.clear()
    sim.chunk_size = 16 * 1024
    (directory / f"{SID}.mp3").unlink()
    return {
        "recording_mb": SIZE / 1e6,
        "worker_rss_before_mib": _mib(worker_before),
        "worker_peak_mib": _mib(worker_peak),
        "worker_growth_mib": _mib(worker_peak - worker_before),
        "web_rss_before_mib": _mib(web_before),
        "web_full_peak_mib": _mib(web_full_peak),
        "web_full_growth_mib": _mib(web_full_peak - web_before),
        "web_range_peak_mib": _mib(web_range_peak),
        "web_range_growth_mib": _mib(web_range_peak - web_before),
        "range_bytes_served": ranged,
    }
