"""Cluster-wide counters in Redis hashes (one per event-stream shard, summed at scrape
time: no hash is touched by every download), so ``/metrics`` on any web process reports
what every web and worker process did (prometheus-client's per-process registries
could not see across hosts).

Counters are plain ``HINCRBY`` fields; histograms are one field per bucket (not
cumulative) plus a ``:sum`` field, accumulated by ``ingest/metrics.py`` at scrape time.
"""

from __future__ import annotations

import bisect
import collections

from calls.redis_client import RedisClient, RedisPipeline
from calls.redis_values import text_map

DOWNLOAD_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# A minute of Twilio's mono MP3 is about 0.5 MB; the buckets span a few seconds to hours.
DOWNLOAD_BUCKETS_BYTES = (16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216, 67_108_864)

SECONDS_PREFIX = "download_seconds"
BYTES_PREFIX = "download_bytes"
TWILIO_PREFIX = "twilio:"


def play_field(result: str) -> str:
    return f"play:{result}"


def download_field(outcome: str) -> str:
    return f"download:{outcome}"


def lock_wait_field(outcome: str) -> str:
    """A download that waited for another holder of its recording's file lock:
    ``stored`` when the holder had stored the recording meanwhile (no Twilio request),
    ``missing`` when it had not (this download goes on to fetch it)."""
    return f"lock_wait:{outcome}"


LOCK_WAIT_OUTCOMES = ("stored", "missing")


def twilio_field(status: str) -> str:
    """``status`` is Twilio's HTTP status code, or ``timeout``/``transport`` when no
    answer came back."""
    return f"{TWILIO_PREFIX}{status}"


def twilio_delete_field(outcome: str) -> str:
    """``outcome``: deleted, gone (Twilio had no copy any more), retry."""
    return f"twilio_delete:{outcome}"


def erase_field(what: str) -> str:
    """``what``: recordings erased, on request or by retention."""
    return f"erase:{what}"


def bucket_field(prefix: str, bounds: tuple[float, ...], value: float) -> str:
    # Non-cumulative bucket counts; the exporter accumulates them. "inf" catches the rest.
    i = bisect.bisect_left(bounds, value)
    return f"{prefix}:{bounds[i]}" if i < len(bounds) else f"{prefix}:inf"


async def count(redis: RedisClient, stats_key: str, field: str, by: int = 1) -> None:
    """``stats_key``: a shard's counters hash (``Shard.stats``); any shard will do, the
    exporter sums them all."""
    await redis.hincrby(stats_key, field, by)


class PendingCounts:
    """Counters kept in memory until a round trip that happens anyway carries them (a
    download's finishing pipeline) or the worker's maintenance loop flushes them, so a
    Twilio response costs no round trip of its own. Counts taken by a pipeline that then
    fails are lost, as a crashed process's would be: they are metrics, not state."""

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()

    def add(self, field: str, by: int = 1) -> None:
        self._counts[field] += by

    def drain_into(self, pipe: RedisPipeline, stats_key: str) -> None:
        """``stats_key``: any shard's counters hash (the exporter sums them all)."""
        for field, by in self._counts.items():
            pipe.hincrby(stats_key, field, by)
        self._counts.clear()

    async def flush(self, redis: RedisClient, stats_key: str) -> None:
        if not self._counts:
            return
        async with redis.pipeline(transaction=False) as pipe:
            self.drain_into(pipe, stats_key)
            await pipe.execute()


def add_download_observation(
    pipe: RedisPipeline,
    stats_key: str,
    outcome: str,
    seconds: float,
    size_bytes: int | None = None,
) -> None:
    """Queue the counters of one finished download attempt on ``pipe`` (the caller
    executes it); ``size_bytes`` when it stored a file from Twilio."""
    pipe.hincrby(stats_key, download_field(outcome), 1)
    pipe.hincrby(stats_key, bucket_field(SECONDS_PREFIX, DOWNLOAD_BUCKETS_S, seconds), 1)
    pipe.hincrbyfloat(stats_key, f"{SECONDS_PREFIX}:sum", seconds)
    if size_bytes is not None:
        pipe.hincrby(stats_key, bucket_field(BYTES_PREFIX, DOWNLOAD_BUCKETS_BYTES, size_bytes), 1)
        pipe.hincrby(stats_key, f"{BYTES_PREFIX}:sum", size_bytes)


async def observe_download(
    redis: RedisClient, stats_key: str, outcome: str, seconds: float, size_bytes: int | None = None
) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        add_download_observation(pipe, stats_key, outcome, seconds, size_bytes)
        await pipe.execute()


async def snapshot(redis: RedisClient, stats_keys: list[str]) -> dict[str, float]:
    """Every counter, summed over the shards' hashes."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in stats_keys:
            pipe.hgetall(key)
        rows = await pipe.execute()
    totals: dict[str, float] = {}
    for raw in rows:
        for k, v in text_map(raw).items():
            totals[k] = totals.get(k, 0.0) + float(v)
    return totals
