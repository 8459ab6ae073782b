"""Keeps a download's slot lease alive, and stops the download if the lease is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.exceptions import RedisClusterException, RedisError

from calls.redis_client import is_transient
from semaphore import Slots

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, slots: Slots, b: str, sid: str, token: str) -> None:
        self._slots, self._b, self._sid, self._token = slots, b, sid, token
        self.lost = False

    async def _renew_forever(self, owner: asyncio.Task[object]) -> None:
        # A third of the lease: two renewals can fail to a Redis blip before it lapses.
        interval_s = self._slots.lease_ms / 3000
        while True:
            await asyncio.sleep(interval_s)
            try:
                renewed = await self._slots.renew(self._b, self._sid, self._token)
            except Exception as exc:
                if not isinstance(exc, (RedisError, RedisClusterException)) and not (
                    is_transient(exc)
                ):
                    raise
                # Unreachable, or the cluster failing over or moving the slot: try again.
                log.warning("lease renewal failed sid=%s error=%s", self._sid, exc)
                continue
            if not renewed:
                log.warning(
                    "LEASE_LOST business_id=%s sid=%s token=%s", self._b, self._sid, self._token
                )
                self.lost = True
                owner.cancel()
                return


@contextlib.asynccontextmanager
async def keep_lease(slots: Slots, b: str, sid: str, token: str) -> AsyncIterator[LeaseKeeper]:
    """While the body runs its lease is renewed; if renewal finds the lease gone (another
    worker owns the slot now) the body is cancelled and ``keeper.lost`` is set."""
    keeper = LeaseKeeper(slots, b, sid, token)
    owner = asyncio.current_task()
    assert owner is not None
    renewer = asyncio.create_task(keeper._renew_forever(owner))
    try:
        yield keeper
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
