"""Scenario 2, cached playback: one stored 1 MiB recording, 32 connections on loopback,
64 KiB Range GETs (random aligned ranges) and full GETs, against nginx sendfile (the
limit), a bare Starlette FileResponse (the usual choice), callrec serving it itself, and
callrec with SERVE_VIA=x-accel behind nginx; with SERVE_VIA=signed, the signed media URL a
play redirects to, checked and served by nginx (deploy/nginx.conf) and by the app itself;
and the same app under granian (a Rust ASGI server) when it is installed. Every side runs
the same number of server processes (WEB_PROCESSES); the x-accel side runs that many of
each (nginx + uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench import procs
from bench.pipeline import register_completed
from callrec.embedded_redis import free_port
from callrec.processes import stop_process
from calls.registry import CallRegistry
from ingest.signed_urls import signed_path
from tests.stack import Proc, Stack, token
from twilio_sim import SimRecording, media_bytes

WEB_PROCESSES = 2
SIZE = 1024 * 1024
RANGE = 64 * 1024
BUSINESS = "4242"
SID = "CA" + "b" * 32
RECORDING = SimRecording(BUSINESS, SID, "RE" + "b" * 32, size_bytes=SIZE)
SIGNED_URL_SECRET = "bench-signed-url-secret-" + "b" * 32
# Side names, in the order the tables list them.
SIDES = (
    "nginx",
    "nginx_signed",
    "callrec_app_signed",
    "callrec_app",
    "starlette_fileresponse",
    "callrec_xaccel",
    "granian_app_signed",
    "granian_app",
)


async def _register(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    await register_completed(CallRegistry(client), RECORDING)
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
    body = media_bytes(RECORDING)
    r = httpx.get(url, headers={**headers, "Range": "bytes=65536-131071"}, timeout=10)
    assert r.status_code == 206 and r.content == body[65536:131072], (url, r.status_code)
    r = httpx.get(url, headers=headers, timeout=10)
    assert r.status_code == 200 and r.content == body, (url, r.status_code)


def _check_redirect(base: str, auth: str) -> None:
    # A play through this front answers 302 to a signed URL that serves the file.
    r = httpx.get(f"{base}/api/calls/{SID}/recording", headers={"Authorization": auth}, timeout=10)
    assert r.status_code == 302, (base, r.status_code)
    _check(base + r.headers["location"], "")


def _row(
    stack: Stack,
    results: dict[str, Any],
    name: str,
    url: str,
    auth: str,
    duration_s: float,
    *servers: Proc,
) -> None:
    """One row of the table: what ``servers`` serve at ``url`` is checked, measured
    under ``results[name]``, then they are stopped (in the order given)."""
    _check(url, auth)
    results[name] = _measure(stack, url, auth, duration_s)
    for server in servers:
        _stop(stack, server)


def run(stack: Stack, duration_s: float) -> dict[str, Any]:
    asyncio.run(_register(stack.redis_url))
    stack.recordings_dir.mkdir(parents=True, exist_ok=True)
    # nginx workers run as an unprivileged user: let them reach the file.
    for p in (stack.tmp, stack.recordings_dir):
        os.chmod(p, 0o755)
    data = media_bytes(RECORDING)
    path = stack.recordings_dir / f"{SID}.mp3"
    path.write_bytes(data)
    auth = f"Bearer {token(BUSINESS)}"
    results: dict[str, Any] = {}

    signed_env = {"SERVE_VIA": "signed", "SIGNED_URL_SECRET": SIGNED_URL_SECRET}
    # The URL a play redirects to, valid for the whole run (the app's TTL only decides
    # what it signs next).
    media = signed_path(SIGNED_URL_SECRET, name=path.name, expires=int(time.time()) + 3600)

    port = free_port()
    nginx = procs.start_nginx(
        stack,
        "nginx-direct",
        procs.nginx_direct_block(port, stack.recordings_dir),
        workers=WEB_PROCESSES,
    )
    url = f"http://127.0.0.1:{port}/files/{path.name}"
    _row(stack, results, "nginx", url, "", duration_s, nginx)

    # deploy/nginx.conf as shipped: nginx checks the signature itself (secure_link) and
    # serves the file; the app behind it is not asked.
    web, web_port = procs.start_uvicorn(
        stack, "ingest.app:app", workers=1, name="callrec-behind-signed", **signed_env
    )
    port = free_port()
    nginx = procs.start_nginx(
        stack,
        "nginx-signed",
        procs.nginx_xaccel_block(
            port,
            web_port,
            stack.recordings_dir,
            stack.tmp / "nginx-signed-access.log",
            signed_url_secret=SIGNED_URL_SECRET,
        ),
        workers=WEB_PROCESSES,
    )
    _check_redirect(f"http://127.0.0.1:{port}", auth)
    url = f"http://127.0.0.1:{port}{media}"
    _row(stack, results, "nginx_signed", url, "", duration_s, nginx, web)

    web, port = procs.start_uvicorn(
        stack, "ingest.app:app", workers=WEB_PROCESSES, name="callrec-signed", **signed_env
    )
    _check_redirect(f"http://127.0.0.1:{port}", auth)
    url = f"http://127.0.0.1:{port}{media}"
    _row(stack, results, "callrec_app_signed", url, "", duration_s, web)

    web, port = procs.start_uvicorn(
        stack, "ingest.app:app", workers=WEB_PROCESSES, name="callrec-app", SERVE_VIA="app"
    )
    url = f"http://127.0.0.1:{port}/api/calls/{SID}/recording"
    _row(stack, results, "callrec_app", url, auth, duration_s, web)

    bare, port = procs.start_uvicorn(
        stack, "bench.bare_app:app", workers=WEB_PROCESSES, name="bare", BENCH_FILE=str(path)
    )
    url = f"http://127.0.0.1:{port}/file"
    _row(stack, results, "starlette_fileresponse", url, "", duration_s, bare)

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
    _row(stack, results, "callrec_xaccel", url, auth, duration_s, nginx, web)

    if procs.granian_binary() is None:
        print("granian is not installed: its rows are left out", file=sys.stderr)
        return results
    web, port = procs.start_granian(
        stack, "ingest.app:app", workers=WEB_PROCESSES, name="granian-signed", **signed_env
    )
    url = f"http://127.0.0.1:{port}{media}"
    _row(stack, results, "granian_app_signed", url, "", duration_s, web)

    web, port = procs.start_granian(
        stack, "ingest.app:app", workers=WEB_PROCESSES, name="granian-app", SERVE_VIA="app"
    )
    url = f"http://127.0.0.1:{port}/api/calls/{SID}/recording"
    _row(stack, results, "granian_app", url, auth, duration_s, web)
    return results


def _stop(stack: Stack, proc: Proc) -> None:
    children = procs.child_pids(proc.popen.pid)
    if stop_process(proc.popen, grace_s=15) == -signal.SIGKILL:
        print(f"{proc.name} did not stop on SIGTERM within 15 s: killed", file=sys.stderr)
        for pid in children:  # the killed server's own workers, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    stack.procs.remove(proc)
