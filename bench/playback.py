"""Scenario 2, cached playback: one stored 1 MiB recording, 32 connections on loopback,
64 KiB Range GETs (random aligned ranges) and full GETs, against nginx sendfile (the
limit), a bare Starlette FileResponse (the usual choice), callrec serving it itself, and
callrec with SERVE_VIA=x-accel behind nginx. Every side runs the same number of server
processes (WEB_PROCESSES); the x-accel side runs that many of each (nginx + uvicorn)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench import procs
from callrec.embedded_redis import free_port
from callrec.processes import stop_process
from calls.registry import CallRegistry
from tests.stack import Proc, Stack, token
from twilio_sim import SimRecording, media_bytes

WEB_PROCESSES = 2
SIZE = 1024 * 1024
RANGE = 64 * 1024
BUSINESS = "4242"
SID = "CA" + "b" * 32


async def _register(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    registry = CallRegistry(client)
    await registry.apply_call_status(
        BUSINESS,
        SID,
        sequence=1,
        started_at_ms=1_700_000_000_000,
        fields={"status": "completed", "from": "+15550000001", "to": "+15550000002"},
    )
    await registry.apply_recording_status(
        BUSINESS,
        SID,
        recording_sid="RE" + "b" * 32,
        twilio_status="completed",
        duration="30",
        now_ms=1_700_000_000_000,
    )
    await client.aclose()


def _measure(stack: Stack, url: str, auth: str, duration_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, range_bytes in (("range_64k", RANGE), ("full", 0)):
        # A short warm-up first: connections, page cache, lazy imports, JIT-less caches.
        procs.wrk(stack.tmp, url, range_bytes=range_bytes, size=SIZE, auth=auth, duration_s=1)
        out[mode] = procs.wrk(
            stack.tmp, url, range_bytes=range_bytes, size=SIZE, auth=auth, duration_s=duration_s
        )
    return out


def _check(url: str, auth: str) -> None:
    # The numbers only count if every side serves the right bytes.
    headers = {"Authorization": auth} if auth else {}
    body = media_bytes(SimRecording(BUSINESS, SID, "RE" + "b" * 32, size_bytes=SIZE))
    r = httpx.get(url, headers={**headers, "Range": "bytes=65536-131071"}, timeout=10)
    assert r.status_code == 206 and r.content == body[65536:131072], (url, r.status_code)
    r = httpx.get(url, headers=headers, timeout=10)
    assert r.status_code == 200 and r.content == body, (url, r.status_code)


def run(stack: Stack, duration_s: float) -> dict[str, Any]:
    asyncio.run(_register(stack.redis_url))
    stack.recordings_dir.mkdir(parents=True, exist_ok=True)
    # nginx workers run as an unprivileged user: let them reach the file.
    for p in (stack.tmp, stack.recordings_dir):
        os.chmod(p, 0o755)
    data = media_bytes(SimRecording(BUSINESS, SID, "RE" + "b" * 32, size_bytes=SIZE))
    path = stack.recordings_dir / f"{SID}.mp3"
    path.write_bytes(data)
    auth = f"Bearer {token(BUSINESS)}"
    results: dict[str, Any] = {}

    port = free_port()
    nginx = procs.start_nginx(
        stack,
        "nginx-direct",
        procs.nginx_direct_block(port, stack.recordings_dir),
        workers=WEB_PROCESSES,
    )
    url = f"http://127.0.0.1:{port}/files/{path.name}"
    _check(url, "")
    results["nginx"] = _measure(stack, url, "", duration_s)
    _stop(stack, nginx)

    bare, port = procs.start_uvicorn(
        stack, "bench.bare_app:app", workers=WEB_PROCESSES, name="bare", BENCH_FILE=str(path)
    )
    url = f"http://127.0.0.1:{port}/file"
    _check(url, "")
    results["starlette_fileresponse"] = _measure(stack, url, "", duration_s)
    _stop(stack, bare)

    web, port = procs.start_uvicorn(
        stack, "ingest.app:app", workers=WEB_PROCESSES, name="callrec-app", SERVE_VIA="app"
    )
    url = f"http://127.0.0.1:{port}/api/calls/{SID}/recording"
    _check(url, auth)
    results["callrec_app"] = _measure(stack, url, auth, duration_s)
    _stop(stack, web)

    web, web_port = procs.start_uvicorn(
        stack, "ingest.app:app", workers=WEB_PROCESSES, name="callrec-xaccel", SERVE_VIA="x-accel"
    )
    port = free_port()
    nginx = procs.start_nginx(
        stack,
        "nginx-xaccel",
        procs.nginx_xaccel_block(
            port, web_port, stack.recordings_dir, stack.tmp / "nginx-xaccel-access.log"
        ),
        workers=WEB_PROCESSES,
    )
    url = f"http://127.0.0.1:{port}/api/calls/{SID}/recording"
    _check(url, auth)
    results["callrec_xaccel"] = _measure(stack, url, auth, duration_s)
    _stop(stack, nginx)
    _stop(stack, web)
    return results


def _stop(stack: Stack, proc: Proc) -> None:
    stop_process(proc.popen, grace_s=15)
    stack.procs.remove(proc)
