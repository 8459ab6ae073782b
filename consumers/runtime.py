"""Wiring: settings in, a ready :class:`Worker` out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from calls import stats
from calls.redis_client import connect
from calls.registry import CallRegistry
from calls.shards import ShardMap
from config.settings import Settings
from consumers.context import WorkerContext
from consumers.twilio_media import TwilioMedia
from consumers.worker import Worker
from semaphore import Slots
from storage.factory import open_store
from tenants.accounts import AccountRegistry
from tenants.permits import AccountPermits
from tenants.routing import AccountRouter
from tenants.secrets import secret_box

FILE_THREADS = 32


async def build_worker(
    settings: Settings, consumer: str
) -> tuple[Worker, Callable[[], Awaitable[None]]]:
    assert settings.redis_url and settings.twilio.account_sid and settings.twilio.auth_token
    # Every download spends a thread on its fsyncs; with asyncio's default pool (cores + 4)
    # a few slow fsyncs queue every other file operation (the stream handler's stat, too)
    # behind them. Concurrent fsyncs also share the filesystem's journal commits.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=FILE_THREADS, thread_name_prefix="files")
    )
    redis = await connect(settings, purpose="worker")
    reader = await connect(settings, purpose="reader")
    shards = ShardMap(settings.event_stream_shards)

    counts = stats.PendingCounts()

    async def count_twilio_response(status: str) -> None:
        counts.add(stats.twilio_field(status))

    twilio = TwilioMedia(
        read_timeout_s=settings.worker.twilio_read_timeout_s,
        on_response=count_twilio_response,
    )
    store = open_store(settings)
    await store.startup()
    ctx = WorkerContext(
        settings=settings,
        redis=redis,
        slots=Slots(
            redis,
            max_slots=settings.max_slots_per_business,
            lease_ms=settings.inflight_ttl_ms,
            queued_ttl_ms=settings.queued_ttl_s * 1000,
        ),
        registry=CallRegistry(redis),
        store=store,
        twilio=twilio,
        router=AccountRouter(settings.twilio, AccountRegistry(redis, secret_box(settings))),
        permits=AccountPermits(
            redis, max_per_account=settings.twilio.max_concurrent_per_account
        ),
        consumer=consumer,
        shards=shards,
        backoff_base_s=settings.worker.backoff_base_ms / 1000,
        counts=counts,
    )
    worker = Worker(
        ctx,
        reader=reader,
        claim_min_idle_ms=settings.worker.claim_min_idle_ms,
        maintenance_interval_s=settings.worker.reconcile_interval_ms / 1000,
        grace_s=settings.worker.shutdown_grace_s,
    )

    async def close() -> None:
        await twilio.aclose()
        await store.close()
        await redis.aclose()
        await reader.aclose()

    return worker, close
