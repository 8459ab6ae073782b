"""Lease renewal (against the real Redis) and the retry backoff."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from calls import keys
from calls.errors import DownloadError
from consumers.backoff import MAX_RETRY_AFTER_S, backoff_s
from consumers.lease import LeaseKeeper, keep_lease
from semaphore import Slots
from tests.worker_kit import B, call_sid, lease_token

A = call_sid(1)
LEASE_MS = 300


async def admitted(redis: Redis) -> tuple[Slots, str]:
    slots = Slots(redis, max_slots=1, lease_ms=LEASE_MS, queued_ttl_ms=60_000)
    await slots.request(B, A)
    token = await lease_token(redis, A)
    assert token is not None
    return slots, token


async def test_the_lease_is_renewed_while_the_body_runs(redis: Redis) -> None:
    slots, token = await admitted(redis)
    renewals = 0
    deadline = time.monotonic() + 20
    async with keep_lease(slots, B, A, token) as keeper:
        last_ms = await redis.pttl(keys.inflight(B, A))
        # Left alone the lease would lapse within LEASE_MS; seen extended three times, it
        # has outlived that and is still ours.
        while renewals < 3:
            assert time.monotonic() < deadline, "the lease was not renewed"
            await asyncio.sleep(0.01)
            ttl_ms = await redis.pttl(keys.inflight(B, A))
            assert ttl_ms > 0, "the lease lapsed while its download ran"
            renewals += ttl_ms > last_ms
            last_ms = ttl_ms
    assert not keeper.lost
    assert await lease_token(redis, A) == token


async def test_a_lost_lease_cancels_the_body_and_is_reported(redis: Redis) -> None:
    slots, token = await admitted(redis)
    kept: list[LeaseKeeper] = []

    async def body() -> None:
        async with keep_lease(slots, B, A, token) as keeper:
            kept.append(keeper)
            # Another worker holds the slot now (our lease lapsed and it was re-granted).
            await redis.set(keys.inflight(B, A), "newer-token", px=60_000)
            await asyncio.Event().wait()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(body(), 20)
    assert kept[0].lost
    assert await lease_token(redis, A) == "newer-token"  # never renewed over the new one


async def test_renewal_stops_when_the_body_ends(redis: Redis) -> None:
    slots, token = await admitted(redis)
    async with keep_lease(slots, B, A, token) as keeper:
        pass
    assert not keeper.lost

    async def lapsed() -> bool:
        return await redis.exists(keys.inflight(B, A)) == 0

    deadline = time.monotonic() + 20
    while not await lapsed():
        assert time.monotonic() < deadline, "the lease was still renewed after the body"
        await asyncio.sleep(0.01)


def error(*, retry_after_s: float | None = None, not_ready: bool = False) -> DownloadError:
    return DownloadError("test", retryable=True, retry_after_s=retry_after_s, not_ready=not_ready)


@pytest.mark.parametrize("attempt", [1, 2, 5, 30])
def test_retry_after_is_honoured_whatever_the_attempt(attempt: int) -> None:
    assert backoff_s(error(retry_after_s=7), attempt, base_s=1, cap_s=60) == 7.0
    assert backoff_s(error(retry_after_s=0), attempt, base_s=1, cap_s=60) == 0.0


def test_retry_after_is_bounded() -> None:
    huge = error(retry_after_s=86_400)
    assert backoff_s(huge, 1, base_s=1, cap_s=60) == MAX_RETRY_AFTER_S


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
def test_not_ready_waits_one_to_three_base_units_doubling(attempt: int) -> None:
    growth = 2 ** (attempt - 1)
    delays = [backoff_s(error(not_ready=True), attempt, base_s=1, cap_s=60) for _ in range(200)]
    assert all(growth <= d <= 3 * growth for d in delays)
    assert max(delays) - min(delays) > growth  # jittered, not one value


def test_not_ready_is_capped() -> None:
    delays = [backoff_s(error(not_ready=True), 20, base_s=1, cap_s=60) for _ in range(50)]
    assert delays == [60.0] * 50


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(1, 1.0), (2, 2.0), (4, 8.0), (7, 60.0), (40, 60.0)]
)
def test_other_failures_get_full_jitter_under_the_cap(attempt: int, ceiling: float) -> None:
    delays = [backoff_s(error(), attempt, base_s=1, cap_s=60) for _ in range(400)]
    assert all(0 <= d <= ceiling for d in delays)
    # Full jitter: spread over the whole range (each bound missed with odds below 1e-40).
    assert min(delays) < 0.2 * ceiling and max(delays) > 0.8 * ceiling
