"""The consumer-group loops: read events, hand each to its handler, acknowledge.

A worker reads every event-stream shard (``calls/shards.py``): the current ones and any
older one still registered, one blocking reader per shard (``XREADGROUP`` cannot span
cluster slots). It runs any number of downloads at once (the per-business slots bound
them); on SIGTERM it stops reading, lets running downloads finish for a grace period,
then hands the rest back to their queues and exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from redis.exceptions import RedisError, ResponseError

from calls import keys, shards
from calls.events import Event
from calls.redis_client import RedisClient, is_transient
from calls.redis_values import stream_entries
from calls.shards import Shard
from consumers import handlers, maintenance, shard_upkeep
from consumers.context import WorkerContext
from consumers.dead_letters import dead_letter
from consumers.download_job import run_download
from consumers.entries import InvalidEntry, describe, describe_fields, note_failure, parse_entry
from consumers.live_sweep import LiveSweep
from lifecycle.loops import start_loops as start_lifecycle_loops

log = logging.getLogger(__name__)

READ_COUNT = 32
READ_BLOCK_MS = 1000
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 5.0
# How long maintenance waits at start for the readers' first pass (Redis may be away).
CATCH_UP_WAIT_S = 5.0


# The only errors that mean "Redis is unreachable, or the cluster is settling: reconnect
# and read again" are calls.redis_client's transient ones: redis-py wraps socket errors
# and timeouts in its own (its TimeoutError is not the builtin one); a replica promoted
# under us answers READONLY until the client reconnects; a cluster answers CLUSTERDOWN,
# TRYAGAIN, or refuses a script mid-migration. Any other error (a disk OSError above
# all) raised while handling an entry is that entry's problem.
unreachable = is_transient


class Worker:
    def __init__(
        self,
        ctx: WorkerContext,
        *,
        reader: RedisClient | None = None,
        claim_min_idle_ms: int = 30_000,
        maintenance_interval_s: float = 5.0,
        retry_poll_s: float = 0.2,
        grace_s: float = 20.0,
    ) -> None:
        self.ctx = ctx
        # Blocking reads get a client whose socket timeout outlasts READ_BLOCK_MS
        # (calls/redis_client.py "reader"); tests may share one client.
        self.reader = reader or ctx.redis
        self.claim_min_idle_ms = claim_min_idle_ms
        self.maintenance_interval_s = maintenance_interval_s
        self.retry_poll_s = retry_poll_s
        self.grace_s = grace_s
        self.stop = asyncio.Event()
        self.downloads: set[asyncio.Task[None]] = set()
        self.shards: tuple[Shard, ...] = ctx.shards.current
        self.readers: dict[Shard, asyncio.Task[None]] = {}
        # Set once a shard's reader has handled this consumer's own pending entries.
        self.caught_up: dict[Shard, asyncio.Event] = {}
        self.failure: BaseException | None = None
        # Where the Twilio response counters (no business of their own) are flushed: any
        # shard's hash will do, the exporter sums them all.
        self._home_stats = ctx.shards.of(ctx.consumer).stats
        self.sweep = LiveSweep()

    async def ensure_group(self, shard: Shard | None = None) -> None:
        stream = (shard or self.ctx.shards.current[0]).events
        try:
            await self.ctx.redis.xgroup_create(stream, keys.EVENTS_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def start_download(self, b: str, sid: str, token: str) -> None:
        task = asyncio.create_task(self._download(b, sid, token), name=f"dl-{sid}")
        self.downloads.add(task)
        task.add_done_callback(self.downloads.discard)

    async def _download(self, b: str, sid: str, token: str) -> None:
        await run_download(self.ctx, b, sid, token, self.start_download)

    async def handle(
        self,
        entry_id: str,
        fields: Mapping[Any, Any],
        *,
        ack: bool = True,
        shard: Shard | None = None,
    ) -> bool:
        """Handle one entry of ``shard`` (default: the first current one) on its own;
        True when it is finished with (handled, or dead-lettered because it can never be
        valid), and then acknowledged unless the caller acknowledges a batch.

        An entry whose handler raised is logged with the error and left pending (False):
        it is claimed again later, and dead-lettered with that error after the delivery
        limit. Only an unreachable Redis (or a cluster settling) escapes, for the caller
        to reconnect."""
        stream = (shard or self.ctx.shards.current[0]).events
        try:
            event = parse_entry(fields)
        except InvalidEntry as exc:
            log.warning("invalid stream entry %s dead-lettered: %s", entry_id, exc)
            await dead_letter(
                self.ctx.redis,
                self.ctx.shards,
                "",
                "",
                reason=f"invalid entry {entry_id}: {exc}; fields {describe_fields(fields)}",
                attempts=1,
                kind="stream",
            )
        else:
            try:
                await self._dispatch(event)
            except Exception as exc:
                if unreachable(exc):
                    raise
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
                await note_failure(self.ctx.redis, stream, entry_id, reason)
                return False
        if ack:
            await self.ctx.redis.xack(stream, keys.EVENTS_GROUP, entry_id)
        return True

    async def _dispatch(self, event: Event) -> None:
        if event.kind == "request":
            await handlers.on_request(self.ctx, event, self.start_download)
        elif event.kind == "start":
            await handlers.on_start(self.ctx, event, self.start_download)
        else:
            await handlers.on_done(self.ctx, event, self.start_download)

    async def _read_loop(self, shard: Shard) -> None:
        try:
            await self._read(shard)
        except Exception as exc:
            # Not Redis being away: a bug. The worker stops (and exits non-zero) rather
            # than silently leaving one shard unread.
            log.exception("reader of %s failed", shard.events)
            self.failure = exc
            self.stop.set()

    async def _read(self, shard: Shard) -> None:
        backoff_s = RECONNECT_FIRST_S
        # "0" = this consumer's own pending entries first: after a reconnect, entries it
        # read but could not finish are handled again at once instead of waiting for
        # another worker to claim them.
        next_id = "0"
        while not self.stop.is_set():
            try:
                reply = await self.reader.xreadgroup(
                    keys.EVENTS_GROUP,
                    self.ctx.consumer,
                    {shard.events: next_id},
                    count=READ_COUNT,
                    block=READ_BLOCK_MS if next_id == ">" else None,
                )
                batch = stream_entries(reply)
                await self._handle_batch(shard, batch)
                if next_id != ">":
                    # Step through the history: an entry that failed again stays pending
                    # and must not be read back forever instead of the new ones.
                    next_id = batch[-1][0] if batch else ">"
                    if next_id == ">":
                        self.caught_up.setdefault(shard, asyncio.Event()).set()
                backoff_s = RECONNECT_FIRST_S
            except Exception as exc:
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    await self._recreate_group_if_lost(shard)
                    continue
                if not unreachable(exc):
                    raise
                log.warning(
                    "redis unreachable on %s (%s); reconnecting in %.1fs",
                    shard.events,
                    exc,
                    backoff_s,
                )
                await self._sleep_unless_stopped(backoff_s)
                backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)
                await self._recreate_group_if_lost(shard)
                next_id = "0"

    async def _handle_batch(
        self, shard: Shard, entries: Iterable[tuple[str, Mapping[Any, Any]]]
    ) -> None:
        # One XACK for everything finished with, even when Redis goes away mid-batch: what
        # was done is acknowledged, the rest stays pending and is read or claimed again.
        handled: list[str] = []
        try:
            for entry_id, fields in entries:
                if await self.handle(entry_id, fields, ack=False, shard=shard):
                    handled.append(entry_id)
        finally:
            if handled:
                await self.ctx.redis.xack(shard.events, keys.EVENTS_GROUP, *handled)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except TimeoutError:
            pass

    async def _wait_for_redis(self) -> None:
        """Register this worker's shards and create their groups, retrying with backoff
        while Redis is unreachable: a worker started before its Redis (or during a
        restart or a failover) waits instead of exiting."""
        backoff_s = RECONNECT_FIRST_S
        while not self.stop.is_set():
            try:
                await shards.register(self.ctx.redis, self.ctx.shards)
                self.shards = await shards.registered(self.ctx.redis, self.ctx.shards)
                for shard in self.shards:
                    await self.ensure_group(shard)
                return
            except Exception as exc:
                if not unreachable(exc):
                    raise
                log.warning("redis unreachable (%s); retrying in %.1fs", exc, backoff_s)
                await self._sleep_unless_stopped(backoff_s)
                backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)

    async def _recreate_group_if_lost(self, shard: Shard) -> None:
        try:
            await self.ensure_group(shard)
        except Exception as exc:
            if not unreachable(exc):
                raise

    async def _wait_caught_up(self, timeout_s: float) -> None:
        events = [self.caught_up.setdefault(s, asyncio.Event()) for s in self.readers]
        waits = [asyncio.create_task(e.wait()) for e in events]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=timeout_s)
            for task in pending:
                task.cancel()

    def _sync_readers(self) -> None:
        """One reader per shard in :attr:`shards`: new shards (another process's N) get
        one, retired ones lose theirs."""
        for shard in self.shards:
            if shard not in self.readers:
                self.readers[shard] = asyncio.create_task(
                    self._read_loop(shard), name=f"read-{shard.events}"
                )
        for shard in [s for s in self.readers if s not in self.shards]:
            self.readers.pop(shard).cancel()

    async def _maintain(self) -> None:
        await self.ctx.counts.flush(self.ctx.redis, self._home_stats)
        self.shards = await shard_upkeep.refresh(self.ctx.redis, self.ctx.shards)
        for shard in self.shards:
            await self.ensure_group(shard)
        self._sync_readers()
        for shard in self.shards:

            async def handle(eid: str, fields: Mapping[Any, Any], shard: Shard = shard) -> bool:
                return await self.handle(eid, fields, shard=shard)

            await maintenance.claim_stale(self.ctx, handle, self.claim_min_idle_ms, shard=shard)
            await maintenance.reconcile_all(self.ctx, shard=shard, registered=self.shards)
            await maintenance.trim_events(self.ctx, shard=shard)
        # Last, so it never holds the reconcilers up: a business it puts back in the index
        # is reconciled on the next tick.
        await self.sweep.tick(self.ctx.redis, self.ctx.shards)

    async def _promote_retries(self) -> None:
        for shard in self.shards:
            await maintenance.promote_due_retries(self.ctx, shard=shard)

    async def run(self) -> int:
        """Read until :attr:`stop` is set; returns how many downloads were handed back
        unfinished when the grace period ran out."""
        await self._wait_for_redis()
        # Readers first, and maintenance once they have handled this consumer's own
        # pending entries ("0"): a claim moves entries into this consumer's list, and the
        # first read would otherwise deliver them again beside the claim.
        self._sync_readers()
        await self._wait_caught_up(CATCH_UP_WAIT_S)
        loops = [
            asyncio.create_task(
                maintenance.run_every(
                    self.retry_poll_s, "retries", self._promote_retries, self.stop
                )
            ),
            asyncio.create_task(
                maintenance.run_every(
                    self.maintenance_interval_s, "maintenance", self._maintain, self.stop
                )
            ),
        ]
        loops += start_lifecycle_loops(self.ctx, self.stop)
        log.info(
            "worker %s reading %s", self.ctx.consumer, ", ".join(s.events for s in self.shards)
        )
        try:
            await self.stop.wait()
            # Each reader ends once its current read returns (at most READ_BLOCK_MS).
            await asyncio.gather(*self.readers.values(), return_exceptions=True)
            log.info("stopped reading; %d downloads running", len(self.downloads))
        finally:
            self.stop.set()
            await asyncio.gather(*loops, *self.readers.values(), return_exceptions=True)
            handed_back = await self._drain()
            try:
                await self.ctx.counts.flush(self.ctx.redis, self._home_stats)
            except Exception as exc:
                # Counters, not state: lost with Redis, as a crashed process's would be.
                if not unreachable(exc):
                    raise
        if self.failure is not None:
            raise self.failure
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
