"""One bad stream entry never stops or stalls a worker (in-process, real Redis and
simulator): it is dead-lettered with its reason, and the entries after it are served."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from calls import keys
from calls.events import Event, publish
from consumers.context import WorkerContext
from consumers.maintenance import MAX_DELIVERIES
from tests import worker_kit
from tests.worker_kit import (
    SHARDS,
    B,
    add_recording,
    all_stored,
    call_sid,
    dead_letter_fields,
    pending_count,
    running_worker,
    state_of,
    wait_until,
    worker_context,
)
from twilio_sim import Simulator

sim = worker_kit.one_simulator_per_module


@pytest.fixture
async def ctx(redis: Redis, sim: Simulator, tmp_path: Path) -> AsyncIterator[WorkerContext]:
    async with worker_context(redis, sim, tmp_path / "recordings") as context:
        yield context


async def test_a_request_whose_sid_is_not_a_sid_is_dead_lettered_and_later_ones_served(
    redis: Redis, sim: Simulator, ctx: WorkerContext
) -> None:
    good = [add_recording(sim, n) for n in (1, 2)]
    async with running_worker(ctx):
        await publish(redis, SHARDS, Event("request", B, "../../etc/passwd", source="test"))
        await publish(
            redis, SHARDS, *(Event("request", B, r.call_sid, source="test") for r in good)
        )
        await wait_until(lambda: all_stored(ctx, good), "the good entries stored")
        letters = await dead_letter_fields(redis)
    assert len(letters) == 1
    assert letters[0]["kind"] == "stream"
    assert "sid must be a Twilio Call or Recording SID" in letters[0]["reason"]
    assert "etc/passwd" in letters[0]["reason"]  # the raw fields, for the operator
    assert await pending_count(redis) == 0


async def test_entries_that_are_not_events_are_dead_lettered_at_once(
    redis: Redis, sim: Simulator, ctx: WorkerContext
) -> None:
    rec = add_recording(sim, 3)
    bad: list[dict[FieldT, EncodableT]] = [
        {"kind": "bogus", "business_id": B, "sid": rec.call_sid},
        {"kind": "request", "sid": rec.call_sid},
        {"kind": "request", "business_id": "a b{c}", "sid": rec.call_sid},
        {"kind": "done", "business_id": B, "sid": rec.call_sid, "delay_ms": "soon"},
        {"kind": "done", "business_id": B, "sid": rec.call_sid, "outcome": "exploded"},
    ]
    async with running_worker(ctx):
        for fields in bad:
            await redis.xadd(keys.EVENTS, fields)
        await publish(redis, SHARDS, Event("request", B, rec.call_sid, source="test"))
        await wait_until(lambda: all_stored(ctx, [rec]), "the good entry stored")

        async def all_dead_lettered() -> bool:
            return len(await dead_letter_fields(redis)) == len(bad)

        await wait_until(all_dead_lettered, "every bad entry dead-lettered")
    reasons = [f["reason"] for f in await dead_letter_fields(redis)]
    assert any("not a callrec event" in r for r in reasons)
    assert any("business_id must be" in r for r in reasons)
    assert any("invalid literal for int()" in r for r in reasons)
    assert any("outcome must be one of" in r for r in reasons)
    assert await state_of(redis, rec.call_sid) == "ready"


async def test_a_disk_error_on_one_entry_leaves_it_pending_then_dead_letters_it(
    redis: Redis, sim: Simulator, ctx: WorkerContext
) -> None:
    # A symlink loop where one call's file belongs: stat() of that path fails with ELOOP,
    # an OSError that is this entry's problem, not an unreachable Redis.
    poisoned = call_sid(9)
    root = ctx.settings.recordings_dir
    os.symlink(root / f"{poisoned}.mp3", root / f"{poisoned}.mp3")
    later = [add_recording(sim, n) for n in (4, 5)]
    async with running_worker(ctx):
        await publish(redis, SHARDS, Event("request", B, poisoned, source="test"))
        await publish(
            redis, SHARDS, *(Event("request", B, r.call_sid, source="test") for r in later)
        )
        await wait_until(lambda: all_stored(ctx, later), "later entries stored")

        async def settled() -> bool:
            return len(await dead_letter_fields(redis)) == 1 and await pending_count(redis) == 0

        await wait_until(settled, "the poisoned entry dead-lettered, nothing left pending")
    (letter,) = await dead_letter_fields(redis)
    assert letter["kind"] == "stream"
    assert (letter["business_id"], letter["sid"]) == (B, poisoned)
    assert letter["reason"].startswith(f"delivered {MAX_DELIVERIES + 1} times")
    assert "Too many levels of symbolic links" in letter["reason"]
    assert int(letter["attempts"]) == MAX_DELIVERIES + 1
    # The reason was kept for the dead letter only.
    assert await redis.keys("rec_entry_error:*") == []
