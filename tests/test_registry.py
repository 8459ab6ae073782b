"""The call registry against a real Redis: listing pages, recording state changes."""

from __future__ import annotations

import asyncio
import base64

import pytest
from redis.asyncio import Redis

from calls import keys
from calls.errors import BadRequest
from calls.redis_values import entries
from calls.registry import CallRegistry, decode_cursor, encode_cursor
from semaphore import Slots

B = "biz1"
SECOND_MS = 1_700_000_000_000


def sid(n: int) -> str:
    return f"CA{n:032x}"


async def register(registry: CallRegistry, n: int, started_at_ms: int) -> None:
    await registry.apply_call_status(
        B, sid(n), sequence=0, started_at_ms=started_at_ms, fields={"status": "completed"}
    )


async def all_pages(registry: CallRegistry, limit: int) -> list[str]:
    listed: list[str] = []
    before: str | None = None
    while True:
        calls, before = await registry.page(B, limit=limit, before=before)
        listed += [c.sid for c in calls]
        if before is None:
            return listed


async def status_events(redis: Redis) -> list[tuple[str, str, str]]:
    rows = entries(await redis.xrange(keys.status_stream(B)))
    return [(f["sid"], f["status"], f["position"]) for _, f in rows]


async def test_a_thousand_calls_in_one_second_list_completely(redis: Redis) -> None:
    registry = CallRegistry(redis)
    for n in range(1000):
        await register(registry, n, SECOND_MS)
    await register(registry, 5000, SECOND_MS + 1000)  # one newer, one older call
    await register(registry, 5001, SECOND_MS - 1000)
    # Newest first; ties on started_at in descending SID order.
    expected = [sid(5000), *(sid(n) for n in reversed(range(1000))), sid(5001)]
    for limit in (50, 7, 200):
        assert await all_pages(registry, limit) == expected


async def test_cursor_holds_when_its_call_moves(redis: Redis) -> None:
    """A later callback with an earlier timestamp moves a call down the listing; a client
    holding a cursor at that call's old place still gets what followed it, once."""
    registry = CallRegistry(redis)
    for n in range(10):
        await register(registry, n, SECOND_MS)
    first, before = await registry.page(B, limit=4, before=None)
    assert [c.sid for c in first] == [sid(n) for n in (9, 8, 7, 6)]
    await register(registry, 6, SECOND_MS - 5000)  # the cursor's call moves down
    rest: list[str] = []
    while before is not None:
        calls, before = await registry.page(B, limit=4, before=before)
        rest += [c.sid for c in calls]
    assert rest == [sid(n) for n in (5, 4, 3, 2, 1, 0, 6)]


def test_cursor_round_trips_and_refuses_what_it_did_not_make() -> None:
    assert decode_cursor(encode_cursor(SECOND_MS, sid(3))) == (SECOND_MS, sid(3))
    forged = [
        "not base64 at all!",
        base64.urlsafe_b64encode(b"12:").decode(),  # no SID
        base64.urlsafe_b64encode(b"12:CA../../etc").decode(),
        base64.urlsafe_b64encode(b"-1:" + sid(1).encode()).decode(),
        base64.urlsafe_b64encode(b"x:" + sid(1).encode()).decode(),
    ]
    for cursor in forged:
        with pytest.raises(BadRequest, match="before"):
            decode_cursor(cursor)


async def test_mark_ready_by_many_callers_at_once_is_one_event(redis: Redis) -> None:
    registry = CallRegistry(redis)
    await register(registry, 1, SECOND_MS)
    # Twenty open connections first, so the twenty callers really overlap.
    await asyncio.gather(*(redis.ping() for _ in range(20)))
    await asyncio.gather(*(registry.mark_ready(B, sid(1)) for _ in range(20)))
    await registry.mark_ready(B, sid(1))
    assert await status_events(redis) == [(sid(1), "ready", "")]
    call = await registry.get(B, sid(1))
    assert call is not None and call.state == "ready"


async def test_mark_ready_leaves_the_pending_index(redis: Redis) -> None:
    """A recording stored behind the slots' back (another process found the file) is no
    longer a candidate for repair."""
    registry = CallRegistry(redis)
    slots = Slots(redis, max_slots=1, lease_ms=60_000, queued_ttl_ms=60_000)
    await slots.request(B, sid(1))
    await slots.request(B, sid(2))
    assert await redis.sismember(keys.pending(B), sid(2))
    await registry.mark_ready(B, sid(2))
    assert not await redis.sismember(keys.pending(B), sid(2))


async def completed(registry: CallRegistry, n: int) -> str:
    update = await registry.apply_recording_status(
        B,
        sid(n),
        recording_sid=f"RE{n:032x}",
        twilio_status="completed",
        duration="12",
        now_ms=SECOND_MS,
    )
    assert update.member == sid(n)  # the call's primary
    return update.state


async def test_replayed_completed_webhook_does_not_revive_a_failed_recording(
    redis: Redis,
) -> None:
    registry = CallRegistry(redis)
    slots = Slots(redis, max_slots=3, lease_ms=60_000, queued_ttl_ms=60_000)
    assert await completed(registry, 1) == "available"
    admitted = await slots.request(B, sid(1))
    # Attempts used up: failed and dead-lettered.
    await slots.release(B, sid(1), admitted.promoted[0].token, "failed")
    before = await status_events(redis)
    # Twilio redelivers the completed callback: the webhook only prefetches "available".
    assert await completed(registry, 1) == "failed"
    call = await registry.get(B, sid(1))
    assert call is not None and call.state == "failed"
    assert await status_events(redis) == before


async def test_recording_status_changes_go_through_set_state(redis: Redis) -> None:
    """Twilio's failed callback on a queued recording: one event, and the call leaves the
    pending index (it is no longer repair's business)."""
    registry = CallRegistry(redis)
    slots = Slots(redis, max_slots=1, lease_ms=60_000, queued_ttl_ms=60_000)
    await slots.request(B, sid(1))
    await slots.request(B, sid(2))
    assert await redis.sismember(keys.pending(B), sid(2))
    await registry.apply_recording_status(
        B, sid(2), recording_sid="", twilio_status="failed", duration="", now_ms=SECOND_MS
    )
    assert (await status_events(redis))[-1] == (sid(2), "failed", "")
    assert not await redis.sismember(keys.pending(B), sid(2))
    call = await registry.get(B, sid(2))
    assert call is not None and call.state == "failed"
    assert call.fields["reason"] == "recording failed at Twilio"
