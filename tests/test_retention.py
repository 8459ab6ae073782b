"""Retention in bounded batches: recordings of old calls erased (files, tombstones,
Twilio deletions queued), then old call records dropped; the registry stops growing."""

from __future__ import annotations

import time
from pathlib import Path

from redis.asyncio import Redis

from calls import keys
from calls.registry import CallRegistry
from lifecycle.erasure import Eraser
from lifecycle.retention import DAY_MS, Retention
from storage.disk import DiskStore
from tests.helpers import call_sid, rec_sid

B = "biz-old"


async def _call(registry: CallRegistry, store: DiskStore, n: int, age_days: float) -> None:
    started = int(time.time() * 1000 - age_days * DAY_MS)
    await registry.apply_call_status(
        B, call_sid(n), sequence=1, started_at_ms=started, fields={"status": "completed"}
    )
    await registry.apply_recording_status(
        B,
        call_sid(n),
        recording_sid=rec_sid(n),
        twilio_status="completed",
        duration="12",
        now_ms=started,
    )
    async with store.staging(call_sid(n)) as staged:
        await staged.write(b"audio %d" % n)
        await store.publish(staged)


async def test_expired_recordings_erased_in_batches_then_calls_dropped(
    redis: Redis, tmp_path: Path
) -> None:
    registry = CallRegistry(redis)
    store = DiskStore(tmp_path)
    for n in range(7):
        await _call(registry, store, n, age_days=40 + n)  # older than 30 days
    for n in range(7, 10):
        await _call(registry, store, n, age_days=1)
    eraser = Eraser(redis, registry, store)
    retention = Retention(
        redis, registry, eraser, retention_days=30, call_retention_days=60, batch=3
    )
    # Bounded: three calls a tick.
    assert await retention.tick() == (3, 0)
    assert await retention.tick() == (3, 0)
    assert await retention.tick() == (1, 0)
    assert await retention.tick() == (0, 0)
    for n in range(7):
        call = await registry.get(B, call_sid(n))
        assert call is not None and call.state == "erased"
        assert await store.stat(call_sid(n)) is None
    for n in range(7, 10):
        call = await registry.get(B, call_sid(n))
        assert call is not None and call.state == "available"
        assert await store.stat(call_sid(n)) is not None
    assert await redis.zcard(keys.TWILIO_DELETES) == 7
    assert await registry.is_erased(B, rec_sid(3))

    # Call retention shorter than the oldest: those records go, tombstones stay.
    drop = Retention(redis, registry, eraser, retention_days=30, call_retention_days=43, batch=50)
    assert await drop.tick() == (0, 4)  # 43..46 days old
    assert await redis.zcard(keys.calls_by_time(B)) == 6
    assert await registry.get(B, call_sid(6)) is None
    assert await registry.is_erased(B, call_sid(6), rec_sid(6))
    # The retention cursor pointed at a dropped call: the next tick starts over, finds
    # only erased calls, and erases nothing twice.
    assert await drop.tick() == (0, 0)
