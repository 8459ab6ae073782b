"""Cluster-wide counters in one Redis hash, so ``/metrics`` on any web process reports
what every web and worker process did (prometheus-client's per-process registries
could not see across hosts)."""

from __future__ import annotations

import bisect

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from calls.keys import STATS
from calls.redis_values import text_map

DOWNLOAD_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def play_field(result: str) -> str:
    return f"play:{result}"


def download_field(outcome: str) -> str:
    return f"download:{outcome}"


async def count(redis: Redis, field: str, by: int = 1) -> None:
    await redis.hincrby(STATS, field, by)


def add_download_observation(pipe: Pipeline, outcome: str, seconds: float) -> None:
    """Queue the counters of one finished download on ``pipe`` (the caller executes it)."""
    # Non-cumulative bucket counts; the exporter accumulates them. "inf" catches the rest.
    i = bisect.bisect_left(DOWNLOAD_BUCKETS_S, seconds)
    bucket = str(DOWNLOAD_BUCKETS_S[i]) if i < len(DOWNLOAD_BUCKETS_S) else "inf"
    pipe.hincrby(STATS, download_field(outcome), 1)
    pipe.hincrby(STATS, f"download_seconds:{bucket}", 1)
    pipe.hincrbyfloat(STATS, "download_seconds:sum", seconds)


async def observe_download(redis: Redis, outcome: str, seconds: float) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        add_download_observation(pipe, outcome, seconds)
        await pipe.execute()


async def snapshot(redis: Redis) -> dict[str, float]:
    raw = await redis.hgetall(STATS)
    return {k: float(v) for k, v in text_map(raw).items()}
