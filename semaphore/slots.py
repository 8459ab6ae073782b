"""Python face of ``lua/slots.lua`` and ``lua/renew.lua``.

Scripts are read from their files and registered once per :class:`Slots`; call sites
only pass keys and arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Literal

from redis.asyncio import Redis

from calls import keys

Outcome = Literal["ready", "failed", "retry", "none"]


def _lua(name: str) -> str:
    return resources.files("semaphore").joinpath("lua", name).read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Admission:
    sid: str
    token: str


@dataclass(frozen=True, slots=True)
class SlotResult:
    verdict: str
    active: int
    queue_len: int
    position: int
    released: bool
    promoted: tuple[Admission, ...]
    dropped: tuple[str, ...]

    @classmethod
    def parse(cls, raw: list[object]) -> SlotResult:
        def text(v: object) -> str:
            return v.decode() if isinstance(v, bytes) else str(v)

        n_promoted = int(text(raw[5]))
        pairs = raw[6 : 6 + 2 * n_promoted]
        rest = raw[6 + 2 * n_promoted :]
        n_dropped = int(text(rest[0]))
        return cls(
            verdict=text(raw[0]),
            active=int(text(raw[1])),
            queue_len=int(text(raw[2])),
            position=int(text(raw[3])),
            released=text(raw[4]) == "1",
            promoted=tuple(
                Admission(text(pairs[i]), text(pairs[i + 1])) for i in range(0, len(pairs), 2)
            ),
            dropped=tuple(text(s) for s in rest[1 : 1 + n_dropped]),
        )


class Slots:
    """Admission, release-and-promote and lease renewal for every business."""

    def __init__(self, redis: Redis, *, max_slots: int, lease_ms: int, queued_ttl_ms: int) -> None:
        self._redis = redis
        self.max_slots = max_slots
        self.lease_ms = lease_ms
        self.queued_ttl_ms = queued_ttl_ms
        self._slots = redis.register_script(_lua("slots.lua"))
        self._renew = redis.register_script(_lua("renew.lua"))

    async def _run(self, op: str, b: str, *extra: str) -> SlotResult:
        argv = [
            op,
            str(self.max_slots),
            keys.inflight_prefix(b),
            keys.call_prefix(b),
            str(self.lease_ms),
            str(self.queued_ttl_ms),
            *extra,
        ]
        raw = await self._slots(keys=keys.business_keys(b), args=argv)
        return SlotResult.parse(raw)

    async def request(self, b: str, sid: str) -> SlotResult:
        """Take a slot for ``sid`` now, or queue it FIFO; idempotent per sid."""
        return await self._run("request", b, sid)

    async def release(self, b: str, sid: str, token: str, outcome: Outcome) -> SlotResult:
        """Free ``sid``'s slot if ``token`` still holds it, then promote the next ones."""
        return await self._run("release", b, sid, token, outcome)

    async def requeue(self, b: str, sid: str) -> SlotResult:
        """Put a retry whose backoff has run out back at the head of its queue."""
        return await self._run("requeue", b, sid)

    async def reconcile(self, b: str) -> SlotResult:
        """Drop dead members (requeued at the head), repair the queue, promote."""
        return await self._run("reconcile", b)

    async def repair(self, b: str, sids: list[str]) -> SlotResult:
        """Requeue at the head those of ``sids`` stuck in queued/processing with nothing
        left to move them on (``position`` of the result = how many). The caller passes
        only calls without a delayed retry waiting."""
        return await self._run("repair", b, *sids)

    async def renew(self, b: str, sid: str, token: str) -> bool:
        renewed = await self._renew(keys=[keys.inflight(b, sid)], args=[token, self.lease_ms])
        return int(renewed) == 1

    async def holds(self, b: str, sid: str, token: str) -> bool:
        """Fencing check: does ``token`` still hold ``sid``'s lease?"""
        current = await self._redis.get(keys.inflight(b, sid))
        if isinstance(current, bytes):
            current = current.decode()
        return current == token
