"""Deleting Twilio's copy of recordings, durably and with retries.

A deletion is a member ``<b>|<recording_sid>|<slot member>`` of the ``rec_twilio_deletes``
ZSET (the slot member names the registry hash that shows where the copies are), due
at a time: added (due at once) when callrec's copy became durable with
``DELETE_FROM_TWILIO``, or by an erasure. Worker loops claim due members
(``lua/claim_due.lua`` leases them, so a worker dying mid-request delays a deletion and
never loses it), send the DELETE with the business's account credentials, and on a
failure put it back with backoff (Retry-After when Twilio sent one). Twilio's 404 means
the copy is gone already: done too.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable

from calls import keys, stats
from calls.errors import TwilioApiError
from calls.redis_client import RedisClient, RedisPipeline
from calls.redis_values import text
from calls.registry import twilio_delete_entry
from lifecycle.twilio_rest import TwilioRest
from semaphore.scripts import plain

log = logging.getLogger(__name__)

CLAIM_LEASE_MS = 60_000
CLAIM_BATCH = 20
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 3600.0

# The REST client of a business's Twilio account (its own, a subaccount, or the main one).
ClientFor = Callable[[str], Awaitable[TwilioRest]]
# Told (business, recording SID, slot member) when Twilio's copy is gone, however it went.
OnDeleted = Callable[[str, str, str], Awaitable[None]]


def schedule(pipe: RedisPipeline, b: str, recording_sid: str, member: str) -> None:
    """Queue the deletion of Twilio's copy on ``pipe`` (due at once; NX: a deletion
    already waiting out a backoff keeps its time)."""
    pipe.zadd(keys.TWILIO_DELETES, {twilio_delete_entry(b, recording_sid, member): 0}, nx=True)


async def request_delete(redis: RedisClient, b: str, recording_sid: str, member: str) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        schedule(pipe, b, recording_sid, member)
        await pipe.execute()


class TwilioDeleter:
    def __init__(
        self,
        redis: RedisClient,
        client_for: ClientFor,
        *,
        on_deleted: OnDeleted | None = None,
        backoff_base_s: float = BACKOFF_BASE_S,
    ) -> None:
        self._redis = redis
        self._client_for = client_for
        self._on_deleted = on_deleted
        self._backoff_base_s = backoff_base_s
        self._claim = plain(redis, "lifecycle", "claim_due.lua")

    async def run_due(self, limit: int = CLAIM_BATCH) -> int:
        """Send the DELETEs that are due; returns how many were attempted."""
        raw = await self._claim(keys=[keys.TWILIO_DELETES], args=[CLAIM_LEASE_MS, limit])
        claimed = [text(m) for m in json.loads(raw).get("claimed", [])]
        for entry in claimed:
            b, recording_sid, member = [*entry.split("|"), "", ""][:3]
            await self._delete_one(entry, b, recording_sid, member)
        return len(claimed)

    async def _delete_one(self, entry: str, b: str, recording_sid: str, member: str) -> None:
        try:
            client = await self._client_for(b)
            deleted = await client.delete_recording(recording_sid)
        except TwilioApiError as exc:
            attempts = await self._redis.hincrby(keys.TWILIO_DELETE_ATTEMPTS, entry, 1)
            delay_s = exc.retry_after_s
            if delay_s is None:
                ceiling = min(BACKOFF_CAP_S, self._backoff_base_s * 2 ** min(attempts, 20))
                delay_s = random.uniform(ceiling / 2, ceiling)
            log.warning(
                "TWILIO_DELETE_RETRY business_id=%s recording_sid=%s attempts=%d "
                "delay_ms=%d reason=%s",
                b,
                recording_sid,
                attempts,
                delay_s * 1000,
                exc.detail.replace(" ", "_"),
            )
            now_s, now_us = await self._redis.time()
            due_ms = now_s * 1000 + now_us // 1000 + int(delay_s * 1000)
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(keys.TWILIO_DELETES, {entry: due_ms}, xx=True)
                pipe.hincrby(keys.STATS, stats.twilio_delete_field("retry"), 1)
                await pipe.execute()
            return
        outcome = "deleted" if deleted else "gone"
        log.info(
            "TWILIO_DELETE business_id=%s recording_sid=%s outcome=%s", b, recording_sid, outcome
        )
        if self._on_deleted is not None:
            await self._on_deleted(b, recording_sid, member)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.TWILIO_DELETES, entry)
            pipe.hdel(keys.TWILIO_DELETE_ATTEMPTS, entry)
            pipe.hincrby(keys.STATS, stats.twilio_delete_field(outcome), 1)
            await pipe.execute()
