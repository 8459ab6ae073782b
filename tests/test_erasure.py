"""Erasure in-process against a real Redis and a disk store: every recording of a call
(its primary, its others, its conference's), tombstones that stop every later write,
twice harmless, a whole business."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from calls import keys
from calls.errors import NotFound
from calls.recordings import RecordingMeta
from calls.registry import CallRegistry
from lifecycle.erasure import Eraser
from storage.disk import DiskStore
from tests.helpers import call_sid, rec_sid

B = "biz-erase"
NOW_MS = 1_700_000_000_000
CONF = "CF" + "a" * 32


async def _store(store: DiskStore, name: str) -> None:
    async with store.staging(name) as staged:
        await staged.write(b"audio of " + name.encode())
        await store.publish(staged)


async def _completed(registry: CallRegistry, n_call: int, n_rec: int) -> str:
    update = await registry.apply_recording_status(
        B,
        call_sid(n_call),
        recording_sid=rec_sid(n_rec),
        twilio_status="completed",
        now_ms=NOW_MS,
        meta=RecordingMeta(duration="9", source="DialVerb"),
    )
    return update.member


async def test_every_recording_of_a_call_goes_and_stays_gone(redis: Redis, tmp_path: Path) -> None:
    registry = CallRegistry(redis)
    store = DiskStore(tmp_path)
    await registry.apply_call_status(B, call_sid(1), sequence=1, started_at_ms=NOW_MS, fields={})
    primary = await _completed(registry, 1, 1)
    other = await _completed(registry, 1, 2)
    assert (primary, other) == (call_sid(1), rec_sid(2))
    await registry.recordings.apply_conference_status(
        B, CONF, call_sid(1), "participant-join", now_ms=NOW_MS
    )
    conf = await registry.recordings.apply_conference_recording(
        B,
        CONF,
        recording_sid=rec_sid(3),
        twilio_status="completed",
        meta=RecordingMeta(),
        now_ms=NOW_MS,
    )
    for name in (call_sid(1), rec_sid(2), rec_sid(3)):
        await _store(store, name)

    eraser = Eraser(redis, registry, store)
    done = await eraser.erase_call(B, call_sid(1))
    assert sorted(done.recording_sids) == [rec_sid(1), rec_sid(2), rec_sid(3)]
    assert done.files_removed == 3 and not done.already
    for name in (call_sid(1), rec_sid(2), rec_sid(3)):
        assert await store.stat(name) is None
    call = await registry.get(B, call_sid(1))
    assert call is not None and call.state == "erased"
    listed = (await registry.recordings.recordings_of([call]))[call_sid(1)]
    assert {r.sid: r.state for r in listed} == {
        rec_sid(1): "erased",
        rec_sid(2): "erased",
        rec_sid(3): "erased",
    }
    assert all(r.as_json()["why"] == "erased" and r.as_json()["duration"] is None for r in listed)
    assert await redis.zcard(keys.TWILIO_DELETES) == 3
    assert conf.member == rec_sid(3)

    # A replayed callback, for the call or the conference, changes nothing.
    assert await _completed(registry, 1, 2) == ""
    replay = await registry.recordings.apply_conference_recording(
        B,
        CONF,
        recording_sid=rec_sid(3),
        twilio_status="completed",
        meta=RecordingMeta(),
        now_ms=NOW_MS,
    )
    assert replay.state == "erased"
    # A slot script that would mark it ready or queued leaves it erased.
    await registry.mark_ready(B, call_sid(1))
    assert (await registry.get(B, call_sid(1))).state == "erased"  # type: ignore[union-attr]

    again = await eraser.erase_call(B, call_sid(1))
    assert again.already and again.files_removed == 0
    with pytest.raises(NotFound):
        await eraser.erase_call(B, call_sid(99))


async def test_a_whole_business(redis: Redis, tmp_path: Path) -> None:
    registry = CallRegistry(redis)
    store = DiskStore(tmp_path)
    for n in range(5):
        await registry.apply_call_status(
            B, call_sid(n), sequence=1, started_at_ms=NOW_MS + n, fields={}
        )
        await _completed(registry, n, n)
        await _store(store, call_sid(n))
    await redis.rpush(keys.backlog(B), call_sid(4))
    eraser = Eraser(redis, registry, store)
    assert await eraser.erase_business(B) == 5
    assert await eraser.erase_business(B) == 0
    for n in range(5):
        assert await store.stat(call_sid(n)) is None
        assert await registry.is_erased(B, rec_sid(n))
    assert not await redis.exists(keys.backlog(B))
