"""A disk that fills up mid-download (a small tmpfs mounted by the test; the suite runs
as root): the download ends in a retry, then ``failed`` with the reason, never a torn
``<call_sid>.mp3``, and its slot goes to the next request."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from calls.events import Event, publish
from consumers.context import WorkerContext
from tests.worker_kit import (
    SHARDS,
    B,
    add_recording,
    all_stored,
    dead_letter_fields,
    part_files,
    running_worker,
    slot_members,
    state_of,
    stored,
    wait_until,
    worker_context,
)
from twilio_sim import Simulator

DISK_BYTES = 512 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "recordings"
    root.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0755", "tmpfs", str(root)],
        check=True,
    )
    try:
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


@pytest.fixture
async def ctx(redis: Redis, sim: Simulator, small_disk: Path) -> AsyncIterator[WorkerContext]:
    async with worker_context(redis, sim, small_disk, max_slots=1, max_attempts=2) as context:
        yield context


async def test_disk_full_mid_download_fails_cleanly_and_frees_the_slot(
    redis: Redis, sim: Simulator, ctx: WorkerContext
) -> None:
    too_big = add_recording(sim, 1, size_bytes=4 * DISK_BYTES)
    small = add_recording(sim, 2, size_bytes=16 * 1024)
    async with running_worker(ctx):
        await publish(redis, SHARDS, Event("request", B, too_big.call_sid, source="test"))
        await publish(redis, SHARDS, Event("request", B, small.call_sid, source="test"))

        async def settled() -> bool:
            return (
                await state_of(redis, too_big.call_sid) == "failed"
                and await all_stored(ctx, [small])
                and not await slot_members(redis)
            )

        await wait_until(settled, "the big one failed, the small one stored, slots free")
    assert not stored(ctx, too_big.call_sid)
    assert part_files(ctx) == []
    # Both attempts reached the disk: the first failure was a retry, not the end.
    assert sim.media_requests(too_big.recording_sid) == 2
    (letter,) = await dead_letter_fields(redis)
    assert (letter["sid"], letter["kind"]) == (too_big.call_sid, "download")
    assert letter["attempts"] == "2"
    assert "No space left on device" in letter["reason"]
