"""One Redis reader per web process for every open ``/api/events`` stream.

Each business's status changes are on its own stream ``rec_status:{b}``. Rather than a
blocking ``XREAD`` (and so a Redis connection) per open tab, the web process keeps one
:class:`StatusHub`: the SSE handlers subscribe to a business in memory, and one
background task reads the streams of the businesses that have subscribers right now and
hands each entry to that business's subscribers, and no other's (as Django Channels and
Phoenix PubSub fan out). A few thousand open tabs cost a few thousand small queues, not a
few thousand connections.

How the task reads depends on the server:

- One server: one ``XREAD BLOCK`` over every subscribed stream, plus the process's own
  wake-up stream (``rec_sse_wake:<process>``): a subscription to a business not read yet
  appends to it, which ends the block at once so the next read includes the new stream.
- A cluster: a multi-key command must stay in one hash slot, and every business has its
  own slot, so one blocking read cannot cover them. The task polls instead: every
  ``CLUSTER_POLL_MS``, one pipeline of non-blocking ``XREAD`` per business, which the
  cluster client sends as one round trip per primary (one connection per primary).

The hub keeps one cursor per subscribed business (the last id it handed out); a new
subscriber gets the cursor at the moment it joined, reads what lies between its own
``Last-Event-ID`` and that cursor itself (``XRANGE``, one short command), then follows
the hub. The caps (``SSE_MAX_STREAMS_PER_BUSINESS``, ``SSE_MAX_STREAMS``) bound what one
tenant, or all of them, can hold open on a process: past them a new stream is refused
with 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.typing import KeyT, StreamIdT

from calls import keys
from calls.errors import TooManyStreams
from calls.redis_client import READER_SOCKET_TIMEOUT_S, RedisClient, is_transient
from calls.redis_values import StreamEntry, entries, text

log = logging.getLogger(__name__)

BATCH = 100  # entries per stream per read
QUEUE_MAX = 1000  # entries a subscriber may fall behind before its stream is ended
CLUSTER_POLL_MS = 250
# One server: how long one read waits for an entry (well under the reader's socket
# timeout, READER_SOCKET_TIMEOUT_S); a business joining ends it early (the wake stream).
BLOCK_MS = 10_000
assert BLOCK_MS < READER_SOCKET_TIMEOUT_S * 1000
WAKE_TTL_MS = 60_000  # the wake-up stream goes away once no business joined for a minute
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
STOP_POLL_S = 0.1


def id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False)
class Subscription:
    """One open stream's place in the hub. ``since`` is the hub's cursor for the business
    when it joined: entries after it arrive on ``queue``; the handler reads the rest."""

    business: str
    since: str
    # None, last: it fell QUEUE_MAX entries behind; its stream ends and the browser comes
    # back with Last-Event-ID, reading the rest from Redis.
    queue: asyncio.Queue[StreamEntry | None] = field(default_factory=asyncio.Queue)
    overflowed: bool = False


def _per_stream(raw: Any) -> dict[str, list[StreamEntry]]:
    """An ``XREAD`` reply, RESP2 (a list of pairs) or RESP3 (a map), by stream name."""
    pairs = raw.items() if isinstance(raw, Mapping) else (raw or [])
    out: dict[str, list[StreamEntry]] = {}
    for stream, items in pairs:
        out[text(stream)] = entries(items)
    return out


class StatusHub:
    def __init__(
        self,
        redis: RedisClient,
        reader: RedisClient,
        *,
        cluster: bool,
        max_per_business: int,
        max_total: int,
    ) -> None:
        self._redis = redis  # request commands: the wake-up append
        self._reader = reader  # the blocking reads (a socket timeout above block_ms)
        self._cluster = cluster
        self._max_per_business = max_per_business
        self._max_total = max_total
        self._subscribers: dict[str, set[Subscription]] = {}
        self._cursors: dict[str, str] = {}  # business -> last id handed out
        self._total = 0
        self._changed = asyncio.Event()  # a business joined: read it from now on
        self._wake_key = keys.sse_wake(uuid.uuid4().hex)
        self._wake_id = "0-0"
        self._task: asyncio.Task[None] | None = None

    @property
    def open_streams(self) -> int:
        return self._total

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="status-hub")

    async def stop(self) -> None:
        task, self._task = self._task, None
        # A cancel that lands between two of redis-py's awaits inside a command can be
        # swallowed (seen with redis-py 8.1): the read then goes on. Cancel until done.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_POLL_S)

    def subscribe(self, business: str, since: str) -> Subscription:
        """Follow ``business``'s stream after ``since`` (an id already pinned by the
        caller). Raises :class:`TooManyStreams` past either cap."""
        current = self._subscribers.get(business, set())
        if len(current) >= self._max_per_business:
            raise TooManyStreams(
                f"too many open event streams for this business (at most "
                f"{self._max_per_business} per web process)"
            )
        if self._total >= self._max_total:
            raise TooManyStreams(
                f"too many open event streams on this web process (at most {self._max_total})"
            )
        if business not in self._cursors:
            self._cursors[business] = since
            self._changed.set()
        sub = Subscription(business, self._cursors[business])
        current.add(sub)
        self._subscribers[business] = current
        self._total += 1
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        current = self._subscribers.get(sub.business)
        if current is None or sub not in current:
            return
        current.discard(sub)
        self._total -= 1
        if not current:
            # Its stream is no longer read; a later subscriber starts from its own id.
            del self._subscribers[sub.business]
            del self._cursors[sub.business]

    def _dispatch(self, business: str, batch: list[StreamEntry]) -> None:
        cursor = self._cursors.get(business)
        if cursor is None:
            return  # everyone left while the read was out
        # A business that left and came back while a read was out has a newer cursor
        # than that read's: the cursor only moves forward.
        batch = [entry for entry in batch if id_key(entry[0]) > id_key(cursor)]
        if not batch:
            return
        self._cursors[business] = batch[-1][0]
        for sub in self._subscribers.get(business, ()):
            if sub.overflowed:
                continue
            if sub.queue.qsize() + len(batch) > QUEUE_MAX:
                sub.overflowed = True
                sub.queue.put_nowait(None)
                continue
            for entry in batch:
                sub.queue.put_nowait(entry)

    async def _run(self) -> None:
        delay_s = RETRY_FIRST_S
        while True:
            if not self._cursors:
                self._changed.clear()
                await self._changed.wait()
            try:
                if self._cluster:
                    await self._poll()
                else:
                    await self._read()
                delay_s = RETRY_FIRST_S
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("status hub: read failed; retrying")
                else:
                    # Subscribers stay; their cursors hold, so nothing is skipped.
                    log.warning("status hub: redis unavailable (%s); retrying", exc)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_MAX_S)

    async def _read(self) -> None:
        """One server: one blocking read over every subscribed stream."""
        self._changed.clear()
        by_key = {keys.status_stream(b): b for b in self._cursors}
        streams: dict[KeyT, StreamIdT] = {key: self._cursors[b] for key, b in by_key.items()}
        streams[self._wake_key] = self._wake_id
        reply = await self._reader.xread(streams, block=BLOCK_MS, count=BATCH)
        for key, batch in _per_stream(reply).items():
            if key == self._wake_key:
                if batch:
                    self._wake_id = batch[-1][0]
            else:
                self._dispatch(by_key[key], batch)

    async def wake(self) -> None:
        """End the reader's block so that it reads a business that just joined."""
        if self._cluster or not self._changed.is_set():
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.pexpire(self._wake_key, WAKE_TTL_MS)
            await pipe.execute()

    async def _poll(self) -> None:
        """A cluster: non-blocking reads of every subscribed stream, one pipeline."""
        self._changed.clear()
        businesses = list(self._cursors)
        async with self._reader.pipeline(transaction=False) as pipe:
            for b in businesses:
                pipe.xread({keys.status_stream(b): self._cursors[b]}, count=BATCH)
            replies = await pipe.execute()
        got = False
        for b, reply in zip(businesses, replies, strict=True):
            for batch in _per_stream(reply).values():
                got = got or bool(batch)
                self._dispatch(b, batch)
        if not got:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), CLUSTER_POLL_MS / 1000)
