"""Erasing a call's recordings, or a whole business's: every stored copy (disk, cache,
bucket), Twilio's copy, and the audio's metadata, for good.

Order matters. The tombstones go first (``calls/lua/erase.lua``): from then on a
webhook, a play, a backfill or a redelivered stream entry finds the SID erased and
fetches nothing. Then the stored copies are deleted. A download already running when
the erasure arrives checks the tombstones after it publishes (``consumers/download_job``)
and deletes what it wrote: whichever of the two runs last removes the file. Twilio's
copy is deleted through the durable, retried queue of ``lifecycle.twilio_deletes``.

Erasing twice is harmless: every step is idempotent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from calls import keys, stats
from calls.errors import NotFound
from calls.redis_client import RedisClient
from calls.redis_values import text
from calls.registry import CallRegistry
from lifecycle.twilio_deletes import schedule
from storage import RecordingStore

log = logging.getLogger(__name__)

BUSINESS_BATCH = 200


@dataclass(frozen=True, slots=True)
class ErasedCall:
    call_sid: str
    members: tuple[str, ...]  # stored names erased: the call SID, and recording SIDs
    recording_sids: tuple[str, ...]  # Twilio copies asked to be deleted
    files_removed: int
    already: bool  # everything was erased before


class Eraser:
    def __init__(self, redis: RedisClient, registry: CallRegistry, store: RecordingStore) -> None:
        self._redis = redis
        self._registry = registry
        self._store = store

    async def erase_call(self, b: str, call_sid: str, *, why: str = "request") -> ErasedCall:
        call = await self._registry.get(b, call_sid)
        if call is None:
            raise NotFound("no such call")
        targets = await self._registry.recording_members(call)
        now_ms = int(time.time() * 1000)
        already = True
        for member, sids in targets:
            was = await self._registry.mark_erased(b, member, sids, now_ms=now_ms)
            already = already and was
        removed = 0
        for member, _ in targets:
            removed += await self._store.delete(member)
        recording_sids = tuple(r for _, member_sids in targets for r in member_sids)
        async with self._redis.pipeline(transaction=False) as pipe:
            for member, member_sids in targets:
                for recording_sid in member_sids:
                    schedule(pipe, b, recording_sid, member)
            if not already:
                pipe.hincrby(keys.STATS, stats.erase_field("recordings"), len(recording_sids))
            await pipe.execute()
        log.info(
            "RECORDING_ERASED business_id=%s sid=%s recordings=%d files=%d why=%s already=%s",
            b,
            call_sid,
            len(recording_sids),
            removed,
            why,
            already,
        )
        return ErasedCall(call_sid, tuple(m for m, _ in targets), recording_sids, removed, already)

    async def erase_calls(self, b: str, call_sids: Sequence[str], *, why: str) -> int:
        erased = 0
        for sid in call_sids:
            try:
                done = await self.erase_call(b, sid, why=why)
            except NotFound:
                continue  # dropped meanwhile (call retention): nothing left to erase
            erased += not done.already
        return erased

    async def erase_business(self, b: str) -> int:
        """Every call of the business, in batches; returns how many were newly erased."""
        erased = 0
        start = 0
        index = keys.calls_by_time(b)
        while True:
            batch = [
                text(m) for m in await self._redis.zrange(index, start, start + BUSINESS_BATCH - 1)
            ]
            if not batch:
                break
            erased += await self.erase_calls(b, batch, why="business")
            start += len(batch)
        # What it asked for and has not got yet goes too.
        await self._redis.delete(keys.backlog(b), keys.backfill(b))
        return erased
