"""``make bench-cluster``: the download pipeline against a 3-primary cluster.

10,000 businesses (3 slots each), one recording each by default, real worker processes
(1, 2, 4, 8) with ``EVENT_STREAM_SHARDS`` streams, the Twilio simulator on loopback.
Per run: downloads per second, Redis CPU per primary (``INFO cpu``, user + sys) and per
recording, worker CPU per recording. A second pair of runs at the same number of
recordings over 100 and 10,000 businesses shows whether the cost per recording grows
with the number of businesses.

The cluster has no replicas here: on a 2-core machine a replica's CPU is the bench's
noise, and failover is what the chaos trials measure (tests/test_cluster_chaos.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.pipeline import call_sid, cpu_s, register_completed, stored_count, wait_stored
from bench.run import RESULTS_DIR, machine, table
from callrec.embedded_cluster import EmbeddedCluster
from calls.events import Event, publish
from calls.redis_client import client_for
from calls.registry import CallRegistry
from calls.shards import ShardMap
from tests.stack import Stack
from twilio_sim import SimRecording, Simulator

MEDIA_BYTES = 16 * 1024
BUSINESSES = 10_000
SHARDS = 6  # two work streams per primary


def recordings(n: int, businesses: int, offset: int = 0) -> list[SimRecording]:
    return [
        SimRecording(
            f"b{i % businesses}", call_sid(offset + i), f"RE{offset + i:032x}", MEDIA_BYTES
        )
        for i in range(n)
    ]


async def _register(url: str, recs: list[SimRecording]) -> None:
    client = client_for(url, cluster=True, purpose="operator")
    registry = CallRegistry(client)

    async def retried(rec: SimRecording) -> None:
        # Setting the registry up is not what is measured: on a loaded machine redis-py's
        # cluster client can fail a burst of fresh connections; try again.
        for attempt in range(5):
            try:
                await register_completed(registry, rec)
                return
            except Exception:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2)

    for i in range(0, len(recs), 20):
        await asyncio.gather(*(retried(r) for r in recs[i : i + 20]))
    await client.aclose()


async def _enqueue(url: str, recs: list[SimRecording], shards: ShardMap) -> float:
    client = client_for(url, cluster=True, purpose="operator")
    events = [Event("request", r.business_id, r.call_sid, source="play") for r in recs]
    t0 = time.monotonic()
    for i in range(0, len(events), 2000):
        await publish(client, shards, *events[i : i + 2000])
    await client.aclose()
    return t0


def redis_cpu_s(cluster: EmbeddedCluster) -> dict[int, float]:
    out = {}
    for node in cluster.primary_nodes():
        with cluster.client(node) as c:
            info = c.info("cpu")
            out[node.port] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return out


def flush(cluster: EmbeddedCluster, sim: Simulator) -> None:
    for node in cluster.primary_nodes():
        with cluster.client(node) as c:
            c.flushall()
    sim.reset_counters()


def run_one(
    cluster: EmbeddedCluster, stack: Stack, sim: Simulator, workers: int, n: int, businesses: int
) -> dict[str, Any]:
    flush(cluster, sim)
    recs = recordings(n, businesses)
    for rec in recs:
        sim.add_recording(rec)
    asyncio.run(_register(cluster.url, recs))
    directory = stack.recordings_dir / f"w{workers}-b{businesses}"
    for _ in range(workers):
        stack.start_worker(RECORDINGS_DIR=str(directory))
    cpu_before = redis_cpu_s(cluster)
    workers_before = sum(cpu_s(p.popen.pid) for p in stack.workers())
    t0 = asyncio.run(_enqueue(cluster.url, recs, ShardMap(SHARDS)))
    t_end = wait_stored(directory, n, timeout_s=600)
    cpu_after = redis_cpu_s(cluster)
    workers_cpu = sum(cpu_s(p.popen.pid) for p in stack.workers()) - workers_before
    stack.stop()
    stack.procs.clear()
    shutil.rmtree(directory, ignore_errors=True)
    makespan = t_end - t0
    per_primary_ms = {
        str(port): (cpu_after[port] - cpu_before.get(port, 0.0)) * 1000 / n for port in cpu_after
    }
    return {
        "workers": workers,
        "n": n,
        "businesses": businesses,
        "shards": SHARDS,
        "makespan_s": makespan,
        "downloads_per_s": n / makespan,
        "redis_cpu_ms_per_recording_by_primary": per_primary_ms,
        "redis_cpu_ms_per_recording": sum(per_primary_ms.values()),
        "redis_cpu_share_of_makespan": {
            port: (cpu_after[port] - cpu_before.get(port, 0.0)) / makespan for port in cpu_after
        },
        "worker_cpu_ms_per_recording": workers_cpu * 1000 / n,
        "stored": stored_count(directory) or n,
        "max_concurrent_per_business": max(
            sim.max_concurrent(f"b{i}") for i in range(min(businesses, 1000))
        ),
    }


def report(runs: list[dict[str, Any]], scaling: list[dict[str, Any]]) -> str:
    rows = []
    for r in runs:
        primaries = " / ".join(
            f"{v:.3f}" for v in r["redis_cpu_ms_per_recording_by_primary"].values()
        )
        rows.append(
            [
                str(r["workers"]),
                f"{r['businesses']:,}",
                f"{r['n']:,}",
                f"{r['downloads_per_s']:.0f}",
                primaries,
                f"{r['redis_cpu_ms_per_recording']:.3f}",
                f"{r['worker_cpu_ms_per_recording']:.2f}",
                str(r["max_concurrent_per_business"]),
            ]
        )
    head = [
        "workers",
        "businesses",
        "recordings",
        "downloads/s",
        "Redis CPU ms/rec per primary",
        "Redis CPU ms/rec",
        "worker CPU ms/rec",
        "max/business",
    ]
    out = table("Cluster pipeline (3 primaries)", head, rows)
    srows = [
        [
            f"{r['businesses']:,}",
            f"{r['n']:,}",
            str(r["workers"]),
            f"{r['downloads_per_s']:.0f}",
            f"{r['redis_cpu_ms_per_recording']:.3f}",
            f"{r['worker_cpu_ms_per_recording']:.2f}",
        ]
        for r in scaling
    ]
    out += "\n" + table(
        "Cost per recording against the number of businesses",
        [
            "businesses",
            "recordings",
            "workers",
            "downloads/s",
            "Redis CPU ms/rec",
            "worker CPU ms/rec",
        ],
        srows,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--recordings", type=int, default=BUSINESSES)
    parser.add_argument("--businesses", type=int, default=BUSINESSES)
    parser.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine()}
    tmp = Path(tempfile.mkdtemp(prefix="callrec-bench-cluster-"))
    try:
        with EmbeddedCluster(primaries=3, replicas=0) as cluster, Simulator() as sim:
            stack = Stack.around(
                sim,
                tmp=tmp,
                redis_url=cluster.url,
                PREFETCH_ON_WEBHOOK="false",
                RECONCILE_INTERVAL_MS="5000",
                EVENT_STREAM_SHARDS=str(SHARDS),
            )
            try:
                runs = []
                for w in args.workers.split(","):
                    runs.append(
                        run_one(cluster, stack, sim, int(w), args.recordings, args.businesses)
                    )
                    print(json.dumps(runs[-1]), flush=True)
                scaling = []
                if args.scaling:
                    for b in (100, args.businesses):
                        scaling.append(run_one(cluster, stack, sim, 2, args.recordings, b))
                        print(json.dumps(scaling[-1]), flush=True)
            finally:
                stack.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["runs"] = runs
    results["scaling"] = scaling
    text = report(runs, scaling)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (RESULTS_DIR / f"bench-cluster-{stamp}.json").write_text(json.dumps(results, indent=2))
    (RESULTS_DIR / "latest-cluster.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
