"""Retention: recordings of calls older than ``RETENTION_DAYS`` are erased (as an erasure
request would), and call records older than ``CALL_RETENTION_DAYS`` (default: the same)
are dropped, so the registry stops growing.

Work is bounded: each tick looks at no more than ``batch`` calls per business. Calls
are visited oldest first from a per-business cursor (``rec_retention:{b}``, the last
call erased) found again by rank, so a tick never rescans what an earlier one did.
Every worker may run it at once: erasing and dropping are idempotent.
"""

from __future__ import annotations

import logging
from typing import Any

from calls import keys
from calls.redis_client import RedisClient
from calls.redis_values import text
from calls.registry import CallRegistry
from lifecycle.erasure import Eraser

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


class Retention:
    def __init__(
        self,
        redis: RedisClient,
        registry: CallRegistry,
        eraser: Eraser,
        *,
        retention_days: int | None,
        call_retention_days: int | None,
        batch: int,
    ) -> None:
        self._redis = redis
        self._registry = registry
        self._eraser = eraser
        self._retention_days = retention_days
        self._call_retention_days = call_retention_days
        self._batch = batch

    @property
    def enabled(self) -> bool:
        return bool(self._retention_days or self._call_retention_days)

    async def _now_ms(self) -> int:
        now_s, now_us = await self._redis.time()
        return int(now_s) * 1000 + int(now_us) // 1000

    async def tick(self) -> tuple[int, int]:
        """One bounded pass over every business: (recordings erased, calls dropped)."""
        erased = dropped = 0
        now_ms = await self._now_ms()
        for raw in await self._redis.smembers(keys.KNOWN_BUSINESSES):
            b = text(raw)
            if self._retention_days:
                erased += await self.erase_expired(b, now_ms - self._retention_days * DAY_MS)
            if self._call_retention_days:
                dropped += await self.drop_expired(b, now_ms - self._call_retention_days * DAY_MS)
        return erased, dropped

    async def erase_expired(self, b: str, cutoff_ms: int) -> int:
        index = keys.calls_by_time(b)
        cursor_key = keys.retention(b)
        last = await self._redis.get(cursor_key)
        start = 0
        if last is not None:
            rank: Any = await self._redis.zrank(index, last)
            # A cursor call dropped since: everything before it went too, start over.
            start = 0 if rank is None else int(rank) + 1
        rows: list[Any] = await self._redis.zrange(
            index, start, start + self._batch - 1, withscores=True
        )
        expired = [text(member) for member, score in rows if float(score) <= cutoff_ms]
        if not expired:
            return 0
        erased = await self._eraser.erase_calls(b, expired, why="retention")
        await self._redis.set(cursor_key, expired[-1])
        if erased:
            log.info("RETENTION_ERASED business_id=%s calls=%d", b, erased)
        return erased

    async def drop_expired(self, b: str, cutoff_ms: int) -> int:
        index = keys.calls_by_time(b)
        rows = await self._redis.zrangebyscore(index, "-inf", cutoff_ms, start=0, num=self._batch)
        sids = [text(member) for member in rows]
        if not sids:
            return 0
        # Their recordings go first (a no-op for those retention erased already).
        await self._eraser.erase_calls(b, sids, why="retention")
        await self._registry.drop_calls(b, sids)
        log.info("RETENTION_DROPPED business_id=%s calls=%d", b, len(sids))
        return len(sids)
