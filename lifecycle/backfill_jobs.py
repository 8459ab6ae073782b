"""Backfills asked for over the admin API, run by workers.

``POST /api/admin/businesses/{b}/backfill`` stores the request (``rec_backfill_job:{b}``)
and makes the business due in ``rec_backfill_jobs``. A worker claims it under a lease
(``lua/claim_due.lua``), renewed after every page; a worker that dies lets the lease
lapse and another one claims the job and resumes from the backfill's own cursor. One
business runs one backfill at a time; asking again while one runs replaces what the
next run does, never starts a second.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import date

from redis.typing import EncodableT, FieldT

from calls import keys
from calls.redis_client import RedisClient
from calls.redis_values import text, text_map
from calls.registry import CallRegistry
from lifecycle.backfill import Backfill, BackfillRequest, Progress
from lifecycle.twilio_rest import TwilioRest
from semaphore.scripts import plain

log = logging.getLogger(__name__)

LEASE_MS = 60_000

ClientFor = Callable[[str], Awaitable[TwilioRest]]


def encode_request(request: BackfillRequest) -> dict[str, str]:
    return {
        "since": request.since.isoformat() if request.since else "",
        "until": request.until.isoformat() if request.until else "",
        "numbers": ",".join(request.numbers),
        "download": "1" if request.download else "",
    }


def decode_request(b: str, fields: dict[str, str]) -> BackfillRequest:
    since, until = fields.get("since"), fields.get("until")
    return BackfillRequest(
        business_id=b,
        since=date.fromisoformat(since) if since else None,
        until=date.fromisoformat(until) if until else None,
        numbers=tuple(n for n in fields.get("numbers", "").split(",") if n),
        download=bool(fields.get("download")),
    )


async def submit(redis: RedisClient, request: BackfillRequest) -> None:
    b = request.business_id
    # The job's hash (the business's slot) in one MULTI, then its place in the global
    # schedule (another slot on a cluster): a crash in between leaves a job nobody runs,
    # which the admin's retry of the submit schedules.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.backfill_job(b))
        fields: dict[FieldT, EncodableT] = {"state": "queued"}
        fields.update(encode_request(request))
        fields["asked_ms"] = int(time.time() * 1000)
        pipe.hset(keys.backfill_job(b), mapping=fields)
        await pipe.execute()
    await redis.zadd(keys.BACKFILL_JOBS, {b: 0}, nx=True)


async def job_status(redis: RedisClient, b: str) -> dict[str, object] | None:
    job = text_map(await redis.hgetall(keys.backfill_job(b)))
    if not job:
        return None
    cursor = text_map(await redis.hgetall(keys.backfill(b)))
    counted = ("_seen", "_imported", "pages", "_queued")
    figures = {k: int(v) for k, v in {**cursor, **job}.items() if k.endswith(counted)}
    return {"business_id": b, "state": job.get("state", "queued"), **figures}


class BackfillRunner:
    def __init__(self, redis: RedisClient, registry: CallRegistry, client_for: ClientFor) -> None:
        self._redis = redis
        self._registry = registry
        self._client_for = client_for
        self._claim = plain(redis, "lifecycle", "claim_due.lua")

    async def run_due(self) -> int:
        raw = await self._claim(keys=[keys.BACKFILL_JOBS], args=[LEASE_MS, 1])
        claimed = [text(b) for b in json.loads(raw).get("claimed", [])]
        for b in claimed:
            await self._run(b)
        return len(claimed)

    async def _renew(self, b: str) -> None:
        now_s, now_us = await self._redis.time()
        due = int(now_s) * 1000 + int(now_us) // 1000 + LEASE_MS
        await self._redis.zadd(keys.BACKFILL_JOBS, {b: due}, xx=True)

    async def _run(self, b: str) -> None:
        fields = text_map(await self._redis.hgetall(keys.backfill_job(b)))
        if not fields:
            await self._redis.zrem(keys.BACKFILL_JOBS, b)
            return
        request = decode_request(b, fields)
        await self._redis.hset(keys.backfill_job(b), "state", "running")
        client = await self._client_for(b)

        async def renew(_progress: Progress) -> None:
            # Kept alive page by page; a worker that stops renewing lets another resume.
            await self._renew(b)

        job = Backfill(self._redis, self._registry, client, request)
        progress = await job.run(after_page=renew)
        # Two slots on a cluster: the job says done, then leaves the schedule (a crash in
        # between runs the finished job again: its imports are idempotent).
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                keys.backfill_job(b),
                mapping={
                    "state": "done",
                    "calls_imported": progress.calls_imported,
                    "recordings_imported": progress.recordings_imported,
                    "calls_seen": progress.calls_seen,
                    "recordings_seen": progress.recordings_seen,
                    "pages": progress.pages,
                    "downloads_queued": progress.downloads_queued,
                },
            )
            pipe.zrem(keys.BACKFILL_JOBS, b)
            await pipe.execute()
        log.info("BACKFILL_JOB_DONE business_id=%s %s", b, progress.summary())
