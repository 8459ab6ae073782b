"""An in-process worker against the real Redis and the real Twilio simulator: the
pieces the consumer unit tests build on (no subprocess, so each check takes
milliseconds)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from calls import keys
from calls.events import Event
from calls.redis_client import RedisClient
from calls.redis_values import entries, text, texts
from calls.registry import CallRegistry
from calls.shards import ShardMap
from config.settings import load_settings
from consumers.context import WorkerContext
from consumers.twilio_media import TwilioMedia
from consumers.worker import Worker
from semaphore import Slots
from storage.disk import DiskStore
from storage.factory import open_store
from tenants.accounts import AccountRegistry
from tenants.permits import AccountPermits
from tenants.routing import AccountRouter
from twilio_sim import SimRecording, Simulator

B = "biz-unit"
SHARDS = ShardMap(1)  # the original layout: the tests read rec_events directly


@pytest.fixture(scope="module")
def one_simulator_per_module() -> Iterator[Simulator]:
    """The simulator of a module of in-process worker tests, which binds it as its
    ``sim`` fixture (``sim = worker_kit.one_simulator_per_module``): each test adds
    recordings of its own, so one simulator saves a start-up per test."""
    with Simulator() as simulator:
        yield simulator


def call_sid(n: int) -> str:
    return f"CA{n:032x}"


def rec_sid(n: int) -> str:
    return f"RE{n:032x}"


def add_recording(sim: Simulator, n: int, *, size_bytes: int = 16 * 1024) -> SimRecording:
    rec = SimRecording(B, call_sid(n), rec_sid(n), size_bytes=size_bytes)
    sim.add_recording(rec)
    return rec


@dataclass
class Starts:
    """A ``start_download`` callback that records what it was asked to start."""

    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def __call__(self, b: str, sid: str, token: str) -> None:
        self.calls.append((b, sid, token))

    @property
    def sids(self) -> list[str]:
        return [sid for _b, sid, _token in self.calls]


@asynccontextmanager
async def worker_context(
    redis: RedisClient,
    sim: Simulator,
    root: Path,
    *,
    max_slots: int = 3,
    lease_ms: int = 60_000,
    max_attempts: int = 5,
    consumer: str = "unit-worker",
    read_timeout_s: float = 10.0,
) -> AsyncIterator[WorkerContext]:
    settings = load_settings(
        {
            "REDIS_URL": "redis://unused",  # the context's client is the test's
            "TWILIO_ACCOUNT_SID": sim.account_sid,
            "TWILIO_AUTH_TOKEN": sim.auth_token,
            "TWILIO_API_BASE": sim.base_url,
            "RECORDINGS_DIR": str(root),
            "MAX_SLOTS_PER_BUSINESS": str(max_slots),
            "DOWNLOAD_MAX_ATTEMPTS": str(max_attempts),
        }
    )
    twilio = TwilioMedia(read_timeout_s=read_timeout_s)
    ctx = WorkerContext(
        settings=settings,
        redis=redis,
        slots=Slots(redis, max_slots=max_slots, lease_ms=lease_ms, queued_ttl_ms=600_000),
        registry=CallRegistry(redis),
        store=DiskStore(root),
        twilio=twilio,
        router=AccountRouter(settings.twilio, AccountRegistry(redis, None)),
        permits=AccountPermits(redis, max_per_account=settings.twilio.max_concurrent_per_account),
        consumer=consumer,
        shards=SHARDS,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
    )
    try:
        yield ctx
    finally:
        await twilio.aclose()


@asynccontextmanager
async def offline_context(
    redis: RedisClient, redis_url: str, root: Path, *, shards: ShardMap
) -> AsyncIterator[WorkerContext]:
    """A worker's context for tests that never download (no simulator: Twilio's base
    URL is a closed port), on ``shards`` work streams."""
    settings = load_settings(
        {
            "REDIS_URL": redis_url,
            "RECORDINGS_DIR": str(root),
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": "t",
            "TWILIO_API_BASE": "http://127.0.0.1:9",
            "EVENT_STREAM_SHARDS": str(shards.count),
        }
    )
    store = open_store(settings)
    await store.startup()
    twilio = TwilioMedia()
    try:
        yield WorkerContext(
            settings=settings,
            redis=redis,
            slots=Slots(redis, max_slots=3, lease_ms=60_000, queued_ttl_ms=600_000),
            registry=CallRegistry(redis),
            store=store,
            twilio=twilio,
            router=AccountRouter(settings.twilio, AccountRegistry(redis, None)),
            permits=AccountPermits(redis, max_per_account=20),
            consumer="test",
            shards=shards,
        )
    finally:
        await twilio.aclose()
        await store.close()


@asynccontextmanager
async def running_worker(ctx: WorkerContext) -> AsyncIterator[Worker]:
    """``Worker.run`` as a task, with claims and maintenance every few milliseconds;
    stopped (and its exit checked) on leaving."""
    # Idle long enough that an entry is never claimed while its own batch is handled.
    worker = Worker(
        ctx, claim_min_idle_ms=200, maintenance_interval_s=0.02, retry_poll_s=0.02, grace_s=5.0
    )
    await worker.ensure_group()
    task = asyncio.create_task(worker.run())
    try:
        yield worker
        assert not task.done(), f"the worker stopped by itself: {task}"
    finally:
        worker.stop.set()
        await asyncio.wait_for(task, 30)


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def state_of(redis: RedisClient, sid: str) -> str | None:
    raw = await redis.hget(keys.call(B, sid), "state")
    return None if raw is None else text(raw)


async def slot_members(redis: RedisClient) -> set[str]:
    return set(texts(await redis.smembers(keys.slots(B))))


async def queue_of(redis: RedisClient) -> list[str]:
    return texts(await redis.lrange(keys.queue(B), 0, -1))


async def lease_token(redis: RedisClient, sid: str) -> str | None:
    raw = await redis.get(keys.inflight(B, sid))
    return None if raw is None else text(raw)


def stored(ctx: WorkerContext, sid: str) -> bool:
    return (ctx.settings.recordings_dir / f"{sid}.mp3").is_file()


def part_files(ctx: WorkerContext) -> list[str]:
    return [p.name for p in ctx.settings.recordings_dir.glob("*.part")]


async def pending_count(redis: RedisClient) -> int:
    summary = await redis.xpending(keys.EVENTS, keys.EVENTS_GROUP)
    return int(summary["pending"])


async def events(redis: RedisClient) -> list[Event]:
    return [Event.parse(f) for _id, f in entries(await redis.xrange(keys.EVENTS))]


async def dead_letter_fields(redis: RedisClient) -> list[dict[str, str]]:
    return [f for _id, f in entries(await redis.xrange(keys.DEAD_LETTERS))]


async def all_stored(ctx: WorkerContext, recs: Iterable[SimRecording]) -> bool:
    return all(stored(ctx, r.call_sid) for r in recs)
