"""Scenarios 3 and 4: the download pipeline, with real worker processes and the simulator.

Calls are registered straight through the registry (what the signed webhooks would write),
and play requests are enqueued with ``calls.events.request_download`` (what a play click
on an unstored recording publishes): the web process is not what is measured here.
Queueing delay is the simulator's clock at a call's first media request minus the bench's
clock at the enqueue (both ``time.monotonic()`` in this process).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from bench.countproxy import CountingProxy
from calls import keys
from calls.events import Event, publish, request_download
from calls.registry import CallRegistry
from calls.shards import ShardMap
from tests.stack import Stack, wait_for
from twilio_sim import SimRecording, Simulator

MEDIA_BYTES = 64 * 1024


def call_sid(n: int) -> str:
    return f"CA{n:032x}"


def business(i: int) -> str:
    return str(1000 + i)


def recordings(n: int, businesses: int, offset: int = 0) -> list[SimRecording]:
    return [
        SimRecording(
            business(i % businesses),
            call_sid(offset + i),
            f"RE{offset + i:032x}",
            size_bytes=MEDIA_BYTES,
        )
        for i in range(n)
    ]


async def register_completed(registry: CallRegistry, rec: SimRecording) -> None:
    """``rec``'s call, completed with its recording, as its signed webhooks would have
    registered it."""
    await registry.apply_call_status(
        rec.business_id,
        rec.call_sid,
        sequence=1,
        started_at_ms=1_700_000_000_000,
        fields={"status": "completed", "from": "+15550000001", "to": "+15550000002"},
    )
    await registry.apply_recording_status(
        rec.business_id,
        rec.call_sid,
        recording_sid=rec.recording_sid,
        twilio_status="completed",
        duration="30",
        now_ms=1_700_000_000_000,
    )


async def _register_async(redis_url: str, recs: list[SimRecording]) -> None:
    client = aioredis.Redis.from_url(redis_url)
    registry = CallRegistry(client)

    for i in range(0, len(recs), 50):
        await asyncio.gather(*(register_completed(registry, r) for r in recs[i : i + 50]))
    await client.aclose()


def register(sim: Simulator, redis_url: str, recs: list[SimRecording]) -> None:
    for rec in recs:
        sim.add_recording(rec)
    asyncio.run(_register_async(redis_url, recs))


async def _enqueue_all(redis_url: str, recs: list[SimRecording]) -> float:
    client = aioredis.Redis.from_url(redis_url)
    events = [Event("request", r.business_id, r.call_sid, source="play") for r in recs]
    t = time.monotonic()
    await publish(client, ShardMap(1), *events)
    await client.aclose()
    return t


def enqueue_all(redis_url: str, recs: list[SimRecording]) -> float:
    """All requests in one pipeline; returns the monotonic time just before it was sent."""
    return asyncio.run(_enqueue_all(redis_url, recs))


async def _enqueue_paced(
    redis_url: str, recs: list[SimRecording], rate_per_s: float
) -> dict[str, float]:
    client = aioredis.Redis.from_url(redis_url)
    sent: dict[str, float] = {}
    start = time.monotonic()
    for i, rec in enumerate(recs):
        due = start + i / rate_per_s
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[rec.call_sid] = time.monotonic()
        await request_download(client, ShardMap(1), rec.business_id, rec.call_sid, source="play")
    await client.aclose()
    return sent


def stored_count(directory: Path) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(1 for e in entries if e.name.endswith(".mp3"))
    except FileNotFoundError:
        return 0


def wait_stored(directory: Path, n: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while stored_count(directory) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {stored_count(directory)}/{n} stored in {timeout_s}s")
        time.sleep(0.005)
    return time.monotonic()


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def command_stats(client: redis.Redis) -> dict[str, int]:
    info: dict[str, Any] = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def command_count(
    stack: Stack, sim: Simulator, client: redis.Redis, n: int, businesses: int
) -> dict[str, Any]:
    """Commands callrec's processes send per recording, counted on the wire by a proxy
    (one worker, N plays enqueued at once); a separate, smaller run, as the proxy costs
    time that the throughput runs must not pay."""
    fresh(client, sim)
    recs = recordings(n, businesses)
    register(sim, stack.redis_url, recs)
    proxy = CountingProxy(int(stack.redis_url.rsplit(":", 1)[1].split("/")[0]))
    proxy.start()
    directory = stack.recordings_dir / "count"
    try:
        stack.start_worker(RECORDINGS_DIR=str(directory), REDIS_URL=proxy.url)
        before = proxy.commands()
        enqueue_all(proxy.url, recs)  # one XADD per recording, counted too
        wait_stored(directory, n, timeout_s=120)
        sent = proxy.commands() - before
    finally:
        stack.stop()
        stack.procs.clear()
        proxy.stop()
    return {"n": n, "businesses": businesses, "commands_per_recording": sent / n}


def fresh(client: redis.Redis, sim: Simulator) -> None:
    client.flushall()
    sim.reset_counters()


def throughput_run(
    stack: Stack, sim: Simulator, client: redis.Redis, workers: int, n: int, businesses: int
) -> dict[str, Any]:
    """N requests over B businesses enqueued at once; then, with the same workers, a paced
    trickle of requests to businesses with free slots for the start latency."""
    fresh(client, sim)
    recs = recordings(n, businesses)
    register(sim, stack.redis_url, recs)
    directory = stack.recordings_dir / f"w{workers}"
    for _ in range(workers):
        stack.start_worker(RECORDINGS_DIR=str(directory))
    sim.reset_counters()
    client.config_resetstat()
    cpu_before = sum(cpu_s(p.popen.pid) for p in stack.workers())
    t0 = enqueue_all(stack.redis_url, recs)
    t_end = wait_stored(directory, n, timeout_s=180)
    after = command_stats(client)
    worker_cpu_ms = (sum(cpu_s(p.popen.pid) for p in stack.workers()) - cpu_before) * 1000 / n
    makespan = t_end - t0
    ok = sim.total_downloads()
    per_business = max(sim.max_concurrent(business(i)) for i in range(businesses))

    # Start latency when a slot is free: one request at a time per business, spaced out.
    trickle = recordings(200, businesses, offset=n)
    register(sim, stack.redis_url, trickle)
    sent = asyncio.run(_enqueue_paced(stack.redis_url, trickle, rate_per_s=100))
    wait_stored(directory, n + len(trickle), timeout_s=60)
    started = sim.first_media_request_times()
    latency_ms = [(started[sid] - t) * 1000 for sid, t in sent.items()]
    stack.stop()
    stack.procs.clear()

    total_calls = sum(v for k, v in after.items() if k not in ("info", "config|resetstat"))
    return {
        "workers": workers,
        "n": n,
        "businesses": businesses,
        "makespan_s": makespan,
        "downloads_per_s": n / makespan,
        "media_downloads": ok,
        "max_concurrent_per_business": per_business,
        "redis_commands_incl_in_script_per_recording": total_calls / n,
        "worker_cpu_ms_per_recording": worker_cpu_ms,
        "commands_by_name_per_recording": {
            k: round(v / n, 2)
            for k, v in sorted(after.items(), key=lambda kv: -kv[1])
            if v / n >= 0.05 and k != "info"
        },
        "start_latency_p50_ms": percentile(latency_ms, 50),
        "start_latency_p99_ms": percentile(latency_ms, 99),
        "start_latency_samples": len(latency_ms),
    }


def latency_makespan(
    stack: Stack, sim: Simulator, client: redis.Redis, workers: int
) -> dict[str, Any]:
    """600 requests over 20 businesses, 200 ms media latency: 30 per business, 3 slots, so
    ten rounds of 0.2 s is the ideal."""
    n, businesses, latency_s = 600, 20, 0.2
    fresh(client, sim)
    recs = recordings(n, businesses)
    register(sim, stack.redis_url, recs)
    directory = stack.recordings_dir / "latency"
    for _ in range(workers):
        stack.start_worker(RECORDINGS_DIR=str(directory))
    sim.latency_s = latency_s
    try:
        t0 = enqueue_all(stack.redis_url, recs)
        t_end = wait_stored(directory, n, timeout_s=60)
    finally:
        sim.latency_s = 0.0
        stack.stop()
        stack.procs.clear()
    ideal = math.ceil(n / businesses / 3) * latency_s
    makespan = t_end - t0
    return {
        "workers": workers,
        "n": n,
        "businesses": businesses,
        "media_latency_s": latency_s,
        "makespan_s": makespan,
        "ideal_s": ideal,
        "efficiency": ideal / makespan,
        "max_concurrent_per_business": max(
            sim.max_concurrent(business(i)) for i in range(businesses)
        ),
    }


def fairness(stack: Stack, sim: Simulator, client: redis.Redis, workers: int) -> dict[str, Any]:
    """Business A with 2,000 queued, business B asking for one recording at a time.

    Media latency is 20 ms so that A's backlog lasts the whole measurement (2,000 / 3
    slots x 20 ms is over 13 s); B's wait is enqueue to its media request, so its own
    download time is not in it. The first B request goes right behind A's 2,000 request
    events on the stream (head-of-line on the stream); the rest once A's are queued."""
    fresh(client, sim)
    a = [
        SimRecording("7001", call_sid(i), f"RE{i:032x}", size_bytes=MEDIA_BYTES)
        for i in range(2000)
    ]
    b = [
        SimRecording("7002", call_sid(10_000 + i), f"RE{10_000 + i:032x}", size_bytes=MEDIA_BYTES)
        for i in range(41)
    ]
    register(sim, stack.redis_url, a + b)
    directory = stack.recordings_dir / "fairness"
    for _ in range(workers):
        stack.start_worker(RECORDINGS_DIR=str(directory))
    sim.latency_s = 0.02
    waits_ms: list[float] = []
    try:
        enqueue_all(stack.redis_url, a)
        t_first = enqueue_all(stack.redis_url, b[:1])
        wait_for(lambda: b[0].call_sid in sim.first_media_request_times(), "B's first", 60)
        first_ms = (sim.first_media_request_times()[b[0].call_sid] - t_first) * 1000
        for rec in b[1:]:
            t = enqueue_all(stack.redis_url, [rec])
            wait_for(lambda rec=rec: rec.call_sid in sim.first_media_request_times(), "B", 30)  # type: ignore[misc]
            waits_ms.append((sim.first_media_request_times()[rec.call_sid] - t) * 1000)
            wait_for(lambda rec=rec: (directory / f"{rec.call_sid}.mp3").exists(), "B stored", 30)  # type: ignore[misc]
        a_still_queued = int(client.llen(keys.queue("7001")))
    finally:
        sim.latency_s = 0.0
        stack.stop()
        stack.procs.clear()
    return {
        "workers": workers,
        "a_queued": len(a),
        "b_requests": len(waits_ms),
        "b_first_behind_burst_ms": first_ms,
        "b_wait_p50_ms": statistics.median(waits_ms),
        "b_wait_p99_ms": percentile(waits_ms, 99),
        "a_still_queued_at_end": a_still_queued,
        "max_concurrent_a": sim.max_concurrent("7001"),
    }


def ordered_recordings(
    businesses: int, per_business: int, order: str, offset: int = 0
) -> list[SimRecording]:
    """The peers' workload shapes: ``grouped`` is all of business 0, then all of business
    1...; ``interleaved`` is round-robin over the businesses."""
    recs = []
    for b in range(businesses):
        for i in range(per_business):
            n = offset + b * per_business + i
            recs.append(
                SimRecording(business(b), call_sid(n), f"RE{n:032x}", size_bytes=MEDIA_BYTES)
            )
    if order == "interleaved":
        recs = [recs[b * per_business + i] for i in range(per_business) for b in range(businesses)]
    return recs


async def _enqueue_one_by_one(redis_url: str, recs: list[SimRecording]) -> float:
    client = aioredis.Redis.from_url(redis_url)
    t = time.monotonic()
    for rec in recs:
        await request_download(client, ShardMap(1), rec.business_id, rec.call_sid, source="play")
    await client.aclose()
    return t


def fifo_out_of_order(recs: list[SimRecording], started: dict[str, float]) -> int:
    """Starts that came after a later-enqueued request of the same business had started
    (the peers' harness counts the same way)."""
    latest: dict[str, int] = {}
    seq = {r.call_sid: i for i, r in enumerate(recs)}
    late = 0
    for sid in sorted(started, key=lambda s: started[s]):
        if sid not in seq:
            continue
        b = recs[seq[sid]].business_id
        if seq[sid] < latest.get(b, -1):
            late += 1
        else:
            latest[b] = seq[sid]
    return late


ADMITTED = re.compile(r"download begins business_id=(\S+) sid=(\S+) token=(\d+)")


def fifo_admission_violations(recs: list[SimRecording], worker_logs: str) -> int:
    """Admissions out of enqueue order within a business, by fencing token (each
    admission's INCR): callrec's FIFO promise. Starts at the media server (the peers'
    measure) also reorder when a business's three slot holders race on the wire."""
    seq = {r.call_sid: i for i, r in enumerate(recs)}
    by_business: dict[str, list[tuple[int, int]]] = {}
    for b, sid, token in ADMITTED.findall(worker_logs):
        if sid in seq:
            by_business.setdefault(b, []).append((int(token), seq[sid]))
    late = 0
    for admissions in by_business.values():
        latest = -1
        for _, n in sorted(admissions):
            if n < latest:
                late += 1
            latest = max(latest, n)
    return late


def peer_workload(
    stack: Stack,
    sim: Simulator,
    client: redis.Redis,
    *,
    businesses: int,
    per_business: int,
    latency_s: float,
    order: str,
    workers: int = 2,
) -> dict[str, Any]:
    """callrec on one of the peers' workloads: the requests enqueued one at a time, as the
    peers' harness enqueues its jobs; wall time is the first enqueue to the last file."""
    fresh(client, sim)
    recs = ordered_recordings(businesses, per_business, order)
    n = len(recs)
    register(sim, stack.redis_url, recs)
    directory = stack.recordings_dir / f"peer-{order}-{businesses}"
    for _ in range(workers):
        stack.start_worker(RECORDINGS_DIR=str(directory))
    sim.reset_counters()
    sim.latency_s = latency_s
    client.config_resetstat()
    try:
        cpu_before = sum(cpu_s(p.popen.pid) for p in stack.workers())
        t0 = asyncio.run(_enqueue_one_by_one(stack.redis_url, recs))
        t_end = wait_stored(directory, n, timeout_s=300)
        cpu_ms = (sum(cpu_s(p.popen.pid) for p in stack.workers()) - cpu_before) * 1000 / n
        after = command_stats(client)
        stack.stop()
        admission_late = fifo_admission_violations(recs, stack.worker_logs())
    finally:
        sim.latency_s = 0.0
        stack.stop()
        stack.procs.clear()
    total_calls = sum(v for k, v in after.items() if k not in ("info", "config|resetstat"))
    wall = t_end - t0
    return {
        "jobs": n,
        "businesses": businesses,
        "order": order,
        "media_latency_s": latency_s,
        "workers": workers,
        "wall_s": wall,
        "jobs_per_s": n / wall,
        "media_downloads": sim.total_downloads(),
        "max_concurrent_per_business": max(
            sim.max_concurrent(business(i)) for i in range(businesses)
        ),
        "fifo_out_of_order": fifo_out_of_order(recs, sim.first_media_request_times()),
        "fifo_admissions_out_of_order": admission_late,
        "worker_cpu_ms_per_recording": cpu_ms,
        "redis_commands_incl_in_script_per_recording": total_calls / n,
        "commands_by_name_per_recording": {
            k: round(v / n, 2)
            for k, v in sorted(after.items(), key=lambda kv: -kv[1])
            if v / n >= 0.05 and k not in ("info", "config|resetstat")
        },
    }
