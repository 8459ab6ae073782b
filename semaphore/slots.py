"""Python face of the slot scripts in ``lua/`` (one per operation, behind the shared
prelude) and ``lua/renew.lua``.

Scripts are registered once per :class:`Slots`; call sites only pass the business, the
SID and what the operation needs. Every key a script touches that the caller can name is
passed in KEYS; the scripts derive only the lease and call keys of the members they find
in the queue or the slot set (same hash tag, so the same cluster slot).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from calls import keys
from calls.redis_client import RedisClient, RedisPipeline
from calls.redis_values import text
from semaphore.scripts import plain, register

# "erased": the recording was erased while it downloaded (its file discarded).
Outcome = Literal["ready", "failed", "retry", "none", "erased"]


@dataclass(frozen=True, slots=True)
class Admission:
    sid: str
    token: str


@dataclass(frozen=True, slots=True)
class SlotResult:
    """What one slot script did; the fields its header documents.

    ``idle``: nothing held, queued or pending for the business after the call (the
    reconciler then drops the business from its index of businesses with live work)."""

    verdict: str
    active: int
    queue_len: int
    position: int
    released: bool
    promoted: tuple[Admission, ...]
    dropped: tuple[str, ...]
    idle: bool = False

    @classmethod
    def parse(cls, raw: object) -> SlotResult:
        data: dict[str, Any] = json.loads(text(raw))
        # cjson encodes an empty Lua table as an object: {} and [] both mean none.
        return cls(
            verdict=str(data["verdict"]),
            active=int(data["active"]),
            queue_len=int(data["queue_len"]),
            position=int(data["position"]),
            released=bool(data["released"]),
            promoted=tuple(
                Admission(str(a["sid"]), str(a["token"])) for a in data["promoted"] or []
            ),
            dropped=tuple(str(s) for s in data["dropped"] or []),
            idle=bool(data["idle"]),
        )


class Slots:
    """Admission, release-and-promote and lease renewal for every business."""

    def __init__(
        self, redis: RedisClient, *, max_slots: int, lease_ms: int, queued_ttl_ms: int
    ) -> None:
        self._redis = redis
        self.max_slots = max_slots
        self.lease_ms = lease_ms
        self.queued_ttl_ms = queued_ttl_ms
        self._request = register(redis, "semaphore", "request.lua")
        self._release = register(redis, "semaphore", "release.lua")
        self._requeue = register(redis, "semaphore", "requeue.lua")
        self._reconcile = register(redis, "semaphore", "reconcile.lua")
        self._repair = register(redis, "semaphore", "repair.lua")
        self._renew = plain(redis, "semaphore", "renew.lua")

    def _common_args(self, b: str) -> list[str]:
        """ARGV[1..6] of every slot script (prelude.lua's layout)."""
        return [
            str(self.max_slots),
            keys.inflight_prefix(b),
            keys.call_prefix(b),
            str(self.lease_ms),
            str(self.queued_ttl_ms),
            str(keys.STATUS_STREAM_MAXLEN),
        ]

    async def request(self, b: str, sid: str) -> SlotResult:
        """Take a slot for ``sid`` now, or queue it FIFO; idempotent per sid."""
        raw = await self._request(
            keys=[*keys.business_keys(b), keys.call(b, sid), keys.inflight(b, sid)],
            args=[*self._common_args(b), sid],
        )
        return SlotResult.parse(raw)

    async def release(self, b: str, sid: str, token: str, outcome: Outcome) -> SlotResult:
        """Free ``sid``'s slot if ``token`` still holds it, then promote the next ones."""
        raw = await self._release(
            keys=[*keys.business_keys(b), keys.call(b, sid), keys.inflight(b, sid)],
            args=[*self._common_args(b), sid, token, outcome],
        )
        return SlotResult.parse(raw)

    def release_in(
        self, pipe: RedisPipeline, b: str, sid: str, token: str, outcome: Outcome
    ) -> None:
        """``release`` queued on ``pipe`` as a bare EVALSHA; ``SlotResult.parse`` reads its
        reply. The finishing worker sends it with the download's counters, in one round
        trip, without the load ``Script`` does before a process's first pipeline. A server
        that does not know the script yet makes ``execute`` raise NoScriptError; the caller
        then calls :meth:`release`, which loads it."""
        key_list = [*keys.business_keys(b), keys.call(b, sid), keys.inflight(b, sid)]
        # execute_command: redis-py's cluster pipeline refuses its evalsha method.
        pipe.execute_command(
            "EVALSHA",
            self._release.sha,
            len(key_list),
            *key_list,
            *self._common_args(b),
            sid,
            token,
            outcome,
        )

    async def requeue(self, b: str, sid: str) -> SlotResult:
        """Put a retry whose backoff has run out back at the head of its queue."""
        raw = await self._requeue(
            keys=[*keys.business_keys(b), keys.call(b, sid)], args=[*self._common_args(b), sid]
        )
        return SlotResult.parse(raw)

    async def reconcile(self, b: str) -> SlotResult:
        """Drop dead members (requeued at the head), repair the queue, promote."""
        raw = await self._reconcile(keys=keys.business_keys(b), args=self._common_args(b))
        return SlotResult.parse(raw)

    async def repair(self, b: str, sids: list[str]) -> SlotResult:
        """Requeue at the head those of ``sids`` stuck in queued/processing with nothing
        left to move them on (``position`` of the result = how many). The caller passes
        only calls without a delayed retry waiting."""
        raw = await self._repair(
            keys=[*keys.business_keys(b), *(keys.call(b, s) for s in sids)],
            args=[*self._common_args(b), *sids],
        )
        return SlotResult.parse(raw)

    async def renew(self, b: str, sid: str, token: str) -> bool:
        renewed = await self._renew(keys=[keys.inflight(b, sid)], args=[token, self.lease_ms])
        return int(renewed) == 1

    async def holds(self, b: str, sid: str, token: str) -> bool:
        """Fencing check: does ``token`` still hold ``sid``'s lease?"""
        current = await self._redis.get(keys.inflight(b, sid))
        if isinstance(current, bytes):
            current = current.decode()
        return current == token
