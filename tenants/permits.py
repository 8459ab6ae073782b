"""Python face of ``lua/permits_*.lua``: the account-wide cap on Twilio requests.

``async with permits.hold(account_sid, b) as permit:`` around each request to Twilio.
A free permit is taken in one script call. Otherwise the request waits in its business's
FIFO list; the scripts hand permits out round robin between businesses, and this process
learns of its grants from the script calls it makes (acquire and release return what they
granted) or, for grants made by other processes, from one poll per account per
``poll_s``, which reads the process's grants inbox (its cost is the grants, not the
waiters) and doubles as the heartbeat that keeps its waiters alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.exceptions import RedisClusterException, RedisError

from calls import keys
from calls.redis_client import RedisClient
from semaphore.scripts import Script, lua_text

log = logging.getLogger(__name__)

# What a permit call may raise when Redis or the cluster's layout is changing: a
# failover's "no node serves the slot" is not a RedisError, and must not end a poller
# (its waiters would wait forever) nor a release (the lease lapses instead).
_REDIS_FAILED = (RedisError, RedisClusterException)

Outcome = Literal["ok", "throttled", "error"]
LEASE_MS = 15_000  # a dead holder blocks one permit of its account at most this long
PROC_TTL_MS = 5_000  # a dead process's waiters are skipped this long after its last poll
POLL_S = 0.02
COOLDOWN_MS = 1_000


def _script(op: str) -> str:
    # The permit scripts have their own prelude (the slots' one is about slots).
    return (
        lua_text("tenants", "permits_prelude.lua") + "\n" + lua_text("tenants", f"permits_{op}.lua")
    )


def _ids(value: Any) -> list[str]:
    # cjson encodes an empty Lua table as {}.
    return [str(v) for v in value] if isinstance(value, list) else []


def process_id() -> str:
    host = socket.gethostname().replace("|", "-")[:40]
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class Permit:
    """One held permit; the request reports how Twilio answered before it is returned."""

    id: str
    account_sid: str
    outcome: Outcome = "error"
    concurrent: int | None = None  # Twilio-Concurrent-Requests of the answer

    def report(self, outcome: Outcome, concurrent: int | None = None) -> None:
        self.outcome = outcome
        self.concurrent = concurrent


@dataclass(slots=True)
class _Waiters:
    futures: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    # waiter id -> business, for waiters whose acquire script has returned "not granted"
    # (only those may be requeued: one still in flight could end up in line twice)
    businesses: dict[str, str] = field(default_factory=dict)
    poller: asyncio.Task[None] | None = None


class AccountPermits:
    def __init__(
        self,
        redis: RedisClient,
        *,
        max_per_account: int,
        lease_ms: int = LEASE_MS,
        proc_ttl_ms: int = PROC_TTL_MS,
        poll_s: float = POLL_S,
        cooldown_ms: int = COOLDOWN_MS,
        proc: str | None = None,
    ) -> None:
        self._redis = redis
        self.max_per_account = max_per_account
        self.lease_ms = lease_ms
        self.proc_ttl_ms = proc_ttl_ms
        self.poll_s = poll_s
        self.cooldown_ms = cooldown_ms
        self.proc = proc or process_id()
        self._counter = itertools.count(1)
        self._scripts = {
            op: Script(redis, _script(op))
            for op in ("acquire", "poll", "requeue", "release", "cancel")
        }
        self._waiting: dict[str, _Waiters] = {}
        self._indexed: set[str] = set()

    async def _run(self, op: str, a: str, own: list[str], *extra: str) -> dict[str, Any]:
        """Run ``op`` on account ``a``; ``own``: the op's KEYS[4..] (its header)."""
        argv = [
            *keys.permit_prefixes(a),
            str(self.max_per_account),
            str(self.lease_ms),
            str(self.proc_ttl_ms),
            *extra,
        ]
        raw = await self._scripts[op](keys=[*keys.permit_keys(a), *own], args=argv)
        result: dict[str, Any] = json.loads(raw)
        self._wake(a, _ids(result.get("others")))
        return result

    def _wake(self, a: str, ids: list[str]) -> None:
        waiters = self._waiting.get(a)
        if waiters is None:
            return
        for permit_id in ids:
            waiters.businesses.pop(permit_id, None)
            future = waiters.futures.pop(permit_id, None)
            if future is not None and not future.done():
                future.set_result(None)

    @contextlib.asynccontextmanager
    async def hold(self, a: str, b: str, *, front: bool = False) -> AsyncIterator[Permit]:
        """A permit of account ``a`` for business ``b`` while the body runs. ``front``:
        wait at the head of ``b``'s line (a request coming back after a 429)."""
        permit = Permit(await self._acquire(a, b, front), a)
        renewer = asyncio.create_task(self._renew(a, permit.id))
        try:
            yield permit
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await asyncio.shield(self._release(permit))

    async def _acquire(self, a: str, b: str, front: bool) -> str:
        if a not in self._indexed:
            await self._redis.sadd(keys.KNOWN_ACCOUNTS, a)
            self._indexed.add(a)
        permit_id = f"{self.proc}|{next(self._counter)}"
        waiters = self._waiting.setdefault(a, _Waiters())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Registered before the script runs: a grant made by this very call (or by a
        # release in this process right after it) finds the future.
        others_waiting = "1" if waiters.futures else "0"
        waiters.futures[permit_id] = future
        try:
            own = [
                *keys.permit_proc_keys(a, self.proc),
                keys.permit_wait(a, b),
                keys.permit_lease(a, permit_id),
            ]
            result = await self._run(
                "acquire", a, own, permit_id, b, "1" if front else "0", others_waiting
            )
            if result.get("granted"):
                waiters.futures.pop(permit_id, None)
                return permit_id
            if not future.done():
                waiters.businesses[permit_id] = b
            if waiters.poller is None or waiters.poller.done():
                waiters.poller = asyncio.create_task(self._poll(a, waiters))
            await future
            return permit_id
        except BaseException:
            waiters.futures.pop(permit_id, None)
            waiters.businesses.pop(permit_id, None)
            # Leave the line; a permit granted meanwhile goes back at once.
            with contextlib.suppress(*_REDIS_FAILED):
                own = [keys.permit_wait(a, b), keys.permit_lease(a, permit_id)]
                await asyncio.shield(self._run("cancel", a, own, permit_id, b))
            raise

    async def _poll(self, a: str, waiters: _Waiters) -> None:
        while waiters.futures:
            await asyncio.sleep(self.poll_s)
            if not waiters.futures:
                break
            try:
                result = await self._run("poll", a, keys.permit_proc_keys(a, self.proc), self.proc)
                self._wake(a, _ids(result.get("granted")))
                if result.get("lapsed"):
                    await self._requeue(a, waiters)
            except _REDIS_FAILED as exc:
                log.warning("permit poll failed account=%s: %s", a, exc)
                await asyncio.sleep(min(1.0, self.proc_ttl_ms / 4000))

    async def _requeue(self, a: str, waiters: _Waiters) -> None:
        pairs = [(i, b) for i, b in waiters.businesses.items() if i in waiters.futures]
        if not pairs:
            return
        own = keys.permit_proc_keys(a, self.proc)
        for permit_id, b in pairs:
            own += [keys.permit_lease(a, permit_id), keys.permit_wait(a, b)]
        result = await self._run("requeue", a, own, self.proc, *(x for p in pairs for x in p))
        if result.get("requeued"):
            log.warning(
                "permit waiters put back in line account=%s n=%s (this process stalled)",
                a,
                result["requeued"],
            )

    async def _renew(self, a: str, permit_id: str) -> None:
        key = keys.permit_lease(a, permit_id)
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                await self._redis.pexpire(key, self.lease_ms)
            except _REDIS_FAILED as exc:
                log.warning("permit renewal failed account=%s: %s", a, exc)

    async def _release(self, permit: Permit) -> None:
        concurrent = "" if permit.concurrent is None else str(permit.concurrent)
        try:
            await self._run(
                "release",
                permit.account_sid,
                [keys.permit_lease(permit.account_sid, permit.id)],
                permit.id,
                permit.outcome,
                concurrent,
                str(self.cooldown_ms),
            )
        except _REDIS_FAILED as exc:
            # Its lease lapses instead; the permit comes back within lease_ms.
            log.warning("permit release failed account=%s: %s", permit.account_sid, exc)


@dataclass(frozen=True, slots=True)
class AccountUsage:
    account_sid: str
    in_use: int
    limit: int
    throttled: int


async def usage(redis: RedisClient, max_per_account: int) -> list[AccountUsage]:
    """Every account requests went to: permits in flight (live leases only), the
    effective limit and the 429s seen; for /metrics and ``callrec status``. Two
    pipelined round trips, however many accounts."""
    from calls.redis_values import text_map, texts

    accounts = sorted(texts(await redis.smembers(keys.KNOWN_ACCOUNTS)))
    async with redis.pipeline(transaction=False) as pipe:
        for a in accounts:
            pipe.smembers(keys.PERMITS.format(a=a))
            pipe.hgetall(keys.RATE.format(a=a))
        replies = await pipe.execute()
    members = [texts(replies[2 * i]) for i in range(len(accounts))]
    async with redis.pipeline(transaction=False) as pipe:
        for a, ids in zip(accounts, members, strict=True):
            prefix = keys.PERMIT_PREFIX.format(a=a)
            if ids:
                pipe.exists(*(prefix + m for m in ids))
        live = iter(await pipe.execute())
    out = []
    for i, a in enumerate(accounts):
        rate = text_map(replies[2 * i + 1])
        limit = min(int(rate.get("limit", max_per_account)), max_per_account)
        in_use = int(next(live)) if members[i] else 0
        out.append(AccountUsage(a, in_use, max(limit, 1), int(rate.get("throttled", 0))))
    return out
