"""The consumer-group loop: read events, hand each to its handler, acknowledge.

A worker runs any number of downloads at once (the per-business slots bound them); on
SIGTERM it stops reading, lets running downloads finish for a grace period, then hands
the rest back to their queues and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from calls import keys
from calls.events import Event
from calls.redis_values import stream_entries
from consumers import handlers, maintenance
from consumers.context import WorkerContext
from consumers.dead_letters import dead_letter
from consumers.download_job import run_download
from consumers.entries import InvalidEntry, describe, describe_fields, note_failure, parse_entry
from lifecycle.loops import start_loops as start_lifecycle_loops

log = logging.getLogger(__name__)

READ_COUNT = 32
READ_BLOCK_MS = 1000
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 5.0
# The only errors that mean "Redis is unreachable: reconnect and read again". redis-py
# wraps socket errors and timeouts in these (its TimeoutError is not the builtin one); a
# replica promoted under us answers READONLY until the client reconnects. Any other error
# (a disk OSError above all) raised while handling an entry is that entry's problem.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)


class Worker:
    def __init__(
        self,
        ctx: WorkerContext,
        *,
        claim_min_idle_ms: int = 30_000,
        maintenance_interval_s: float = 5.0,
        retry_poll_s: float = 0.2,
        grace_s: float = 20.0,
    ) -> None:
        self.ctx = ctx
        self.claim_min_idle_ms = claim_min_idle_ms
        self.maintenance_interval_s = maintenance_interval_s
        self.retry_poll_s = retry_poll_s
        self.grace_s = grace_s
        self.stop = asyncio.Event()
        self.downloads: set[asyncio.Task[None]] = set()

    async def ensure_group(self) -> None:
        try:
            await self.ctx.redis.xgroup_create(
                keys.EVENTS, keys.EVENTS_GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def start_download(self, b: str, sid: str, token: str) -> None:
        task = asyncio.create_task(self._download(b, sid, token), name=f"dl-{sid}")
        self.downloads.add(task)
        task.add_done_callback(self.downloads.discard)

    async def _download(self, b: str, sid: str, token: str) -> None:
        await run_download(self.ctx, b, sid, token, self.start_download)

    async def handle(self, entry_id: str, fields: Mapping[Any, Any], *, ack: bool = True) -> bool:
        """Handle one entry on its own; True when it is finished with (handled, or
        dead-lettered because it can never be valid), and then acknowledged unless the
        caller acknowledges a batch.

        An entry whose handler raised is logged with the error and left pending (False):
        it is claimed again later, and dead-lettered with that error after the delivery
        limit. Only an unreachable Redis escapes, for the caller to reconnect."""
        try:
            event = parse_entry(fields)
        except InvalidEntry as exc:
            log.warning("invalid stream entry %s dead-lettered: %s", entry_id, exc)
            await dead_letter(
                self.ctx.redis,
                "",
                "",
                reason=f"invalid entry {entry_id}: {exc}; fields {describe_fields(fields)}",
                attempts=1,
                kind="stream",
            )
        else:
            try:
                await self._dispatch(event)
            except UNREACHABLE:
                raise
            except Exception as exc:
                reason = describe(exc)
                log.warning(
                    "stream entry %s failed, left pending: kind=%s business_id=%s sid=%s: %s",
                    entry_id,
                    event.kind,
                    event.business_id,
                    event.sid,
                    reason,
                    exc_info=not isinstance(exc, (OSError, RedisError)),
                )
                await note_failure(self.ctx.redis, entry_id, reason)
                return False
        if ack:
            await self.ctx.redis.xack(keys.EVENTS, keys.EVENTS_GROUP, entry_id)
        return True

    async def _dispatch(self, event: Event) -> None:
        if event.kind == "request":
            await handlers.on_request(self.ctx, event, self.start_download)
        elif event.kind == "start":
            await handlers.on_start(self.ctx, event, self.start_download)
        else:
            await handlers.on_done(self.ctx, event, self.start_download)

    async def _read_loop(self) -> None:
        backoff_s = RECONNECT_FIRST_S
        # "0" = this consumer's own pending entries first: after a reconnect, entries it
        # read but could not finish are handled again at once instead of waiting for
        # another worker to claim them.
        next_id = "0"
        while not self.stop.is_set():
            try:
                reply = await self.ctx.redis.xreadgroup(
                    keys.EVENTS_GROUP,
                    self.ctx.consumer,
                    {keys.EVENTS: next_id},
                    count=READ_COUNT,
                    block=None if next_id == "0" else READ_BLOCK_MS,
                )
                batch = stream_entries(reply)
                await self._handle_batch(batch)
                if next_id != ">":
                    # Step through the history: an entry that failed again stays pending
                    # and must not be read back forever instead of the new ones.
                    next_id = batch[-1][0] if batch else ">"
                backoff_s = RECONNECT_FIRST_S
            except UNREACHABLE as exc:
                log.warning("redis unreachable (%s); reconnecting in %.1fs", exc, backoff_s)
                await self._sleep_unless_stopped(backoff_s)
                backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)
                await self._recreate_group_if_lost()
                next_id = "0"
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    await self._recreate_group_if_lost()
                else:
                    raise

    async def _handle_batch(self, entries: Iterable[tuple[str, Mapping[Any, Any]]]) -> None:
        # One XACK for everything finished with, even when Redis goes away mid-batch: what
        # was done is acknowledged, the rest stays pending and is read or claimed again.
        handled: list[str] = []
        try:
            for entry_id, fields in entries:
                if await self.handle(entry_id, fields, ack=False):
                    handled.append(entry_id)
        finally:
            if handled:
                await self.ctx.redis.xack(keys.EVENTS, keys.EVENTS_GROUP, *handled)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except TimeoutError:
            pass

    async def _wait_for_redis(self) -> None:
        """Create the group, retrying with backoff while Redis is unreachable: a worker
        started before its Redis (or during a restart) waits instead of exiting."""
        backoff_s = RECONNECT_FIRST_S
        while not self.stop.is_set():
            try:
                await self.ensure_group()
                return
            except UNREACHABLE as exc:
                log.warning("redis unreachable (%s); retrying in %.1fs", exc, backoff_s)
                await self._sleep_unless_stopped(backoff_s)
                backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)

    async def _recreate_group_if_lost(self) -> None:
        try:
            await self.ensure_group()
        except RedisError:
            pass

    async def _maintain(self) -> None:
        await self.ctx.counts.flush(self.ctx.redis)
        await maintenance.claim_stale(self.ctx, self.handle, self.claim_min_idle_ms)
        await maintenance.reconcile_all(self.ctx)
        await maintenance.trim_events(self.ctx)

    async def run(self) -> int:
        """Read until :attr:`stop` is set; returns how many downloads were handed back
        unfinished when the grace period ran out."""
        await self._wait_for_redis()
        loops = [
            asyncio.create_task(
                maintenance.run_every(
                    self.retry_poll_s,
                    "retries",
                    lambda: maintenance.promote_due_retries(self.ctx),
                    self.stop,
                )
            ),
            asyncio.create_task(
                maintenance.run_every(
                    self.maintenance_interval_s, "maintenance", self._maintain, self.stop
                )
            ),
        ]
        loops += start_lifecycle_loops(self.ctx, self.stop)
        log.info("worker %s reading %s", self.ctx.consumer, keys.EVENTS)
        try:
            await self._read_loop()
            log.info("stopped reading; %d downloads running", len(self.downloads))
        finally:
            self.stop.set()
            await asyncio.gather(*loops, return_exceptions=True)
            handed_back = await self._drain()
            with contextlib.suppress(RedisError):
                await self.ctx.counts.flush(self.ctx.redis)
        return handed_back

    async def _drain(self) -> int:
        if not self.downloads:
            return 0
        log.info("draining %d downloads (grace %.0fs)", len(self.downloads), self.grace_s)
        _done, pending = await asyncio.wait(set(self.downloads), timeout=self.grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.info("handed back %d downloads", len(pending))
        return len(pending)
