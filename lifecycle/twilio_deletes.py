"""Deleting Twilio's copy of recordings, durably and with retries.

A deletion is a member ``<b>|<recording_sid>`` of the ``rec_twilio_deletes`` ZSET, due
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
from importlib import resources

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from calls import keys, stats
from calls.errors import TwilioApiError
from calls.redis_values import text
from lifecycle.twilio_rest import TwilioRest

log = logging.getLogger(__name__)

CLAIM_LEASE_MS = 60_000
CLAIM_BATCH = 20
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 3600.0
OUTCOMES = ("deleted", "gone", "retry")

# The REST client of a business's Twilio account (its own, a subaccount, or the main one).
ClientFor = Callable[[str], TwilioRest]
# Told when Twilio's copy of (business, recording) is gone, however it went.
OnDeleted = Callable[[str, str], Awaitable[None]]


def _lua(name: str) -> str:
    return resources.files("lifecycle").joinpath("lua", name).read_text(encoding="utf-8")


def schedule(pipe: Pipeline, b: str, recording_sid: str) -> None:
    """Queue the deletion of Twilio's copy on ``pipe`` (due at once; NX: a deletion
    already waiting out a backoff keeps its time)."""
    pipe.zadd(keys.TWILIO_DELETES, {keys.delayed_member(b, recording_sid): 0}, nx=True)


async def request_delete(redis: Redis, b: str, recording_sid: str) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        schedule(pipe, b, recording_sid)
        await pipe.execute()


class TwilioDeleter:
    def __init__(
        self,
        redis: Redis,
        client_for: ClientFor,
        *,
        on_deleted: OnDeleted | None = None,
        backoff_base_s: float = BACKOFF_BASE_S,
    ) -> None:
        self._redis = redis
        self._client_for = client_for
        self._on_deleted = on_deleted
        self._backoff_base_s = backoff_base_s
        self._claim = redis.register_script(_lua("claim_due.lua"))

    async def run_due(self, limit: int = CLAIM_BATCH) -> int:
        """Send the DELETEs that are due; returns how many were attempted."""
        raw = await self._claim(keys=[keys.TWILIO_DELETES], args=[CLAIM_LEASE_MS, limit])
        claimed = [text(m) for m in json.loads(raw).get("claimed", [])]
        for member in claimed:
            b, _, recording_sid = member.partition("|")
            await self._delete_one(member, b, recording_sid)
        return len(claimed)

    async def _delete_one(self, member: str, b: str, recording_sid: str) -> None:
        try:
            deleted = await self._client_for(b).delete_recording(recording_sid)
        except TwilioApiError as exc:
            attempts = await self._redis.hincrby(keys.TWILIO_DELETE_ATTEMPTS, member, 1)
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
                pipe.zadd(keys.TWILIO_DELETES, {member: due_ms}, xx=True)
                pipe.hincrby(keys.STATS, stats.twilio_delete_field("retry"), 1)
                await pipe.execute()
            return
        outcome = "deleted" if deleted else "gone"
        log.info(
            "TWILIO_DELETE business_id=%s recording_sid=%s outcome=%s", b, recording_sid, outcome
        )
        if self._on_deleted is not None:
            await self._on_deleted(b, recording_sid)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.TWILIO_DELETES, member)
            pipe.hdel(keys.TWILIO_DELETE_ATTEMPTS, member)
            pipe.hincrby(keys.STATS, stats.twilio_delete_field(outcome), 1)
            await pipe.execute()
