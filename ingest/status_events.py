"""``GET /api/events``: Server-Sent Events, one per status change of the business's
recordings (``status``: ``call_sid``, ``status``, ``position``), and one each time the
head of its queue moves (``queue``: ``head``, from which a page with a ticket computes
its place).

Fed from the business's own status stream ``rec_status:{b}`` (written by the slot and
registry scripts), so a business never sees another's events. Each event's ``id`` is its
stream id: a reconnecting ``EventSource`` sends it back as ``Last-Event-ID`` and gets
what it missed. A stream is capped (``MAXLEN ~ 1000``); when a client comes back from
further than the oldest kept entry, it gets a ``resync`` event telling it to ask for the
current statuses again rather than trust a stream with a hole in it.

No open stream holds a Redis connection: the process's one
:class:`~ingest.status_hub.StatusHub` reads for all of them and hands each its business's
entries. Past ``SSE_MAX_STREAMS_PER_BUSINESS`` or ``SSE_MAX_STREAMS`` open streams on the
process a new one is refused with 429. A quiet stream gets a comment line every
``SSE_KEEPALIVE_SECONDS``, which keeps proxies from closing an idle connection and lets
the server notice a client that went away. A stream ends when its token expires
(``exp``): the browser's ``EventSource`` reconnects, gets a 401 and the page asks for a
new token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from calls import keys
from calls.digits import ascii_digits
from calls.redis_client import RedisClient
from calls.redis_values import StreamEntry, entries
from ingest.auth import grant_of
from ingest.state import app_state
from ingest.status_hub import Subscription, id_key

log = logging.getLogger(__name__)

STREAM_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
RECONNECT_MS = 2000
BATCH = 100
MAX_ID_PART = 2**64 - 1


def _wait_s(keepalive_s: int, expires_at: float) -> float:
    """How long to wait for an entry: a keep-alive period, cut short by the token's expiry."""
    return max(0.0, min(float(keepalive_s), expires_at - time.time()))


def _valid_id(value: str) -> bool:
    match = STREAM_ID.fullmatch(value)
    return match is not None and all(int(part) <= MAX_ID_PART for part in match.groups())


def _integer(value: str | None) -> int | None:
    # Tickets put back at the head may go below zero.
    text = value or ""
    return int(text) if ascii_digits(text.removeprefix("-")) else None


def _frame(entry_id: str, fields: dict[str, str]) -> bytes:
    if "queue_head" in fields:
        # The head of the business's queue moved: a waiting page's place is its ticket
        # minus this, plus one (semaphore/lua/prelude.lua, "Queue positions").
        head = {"head": _integer(fields["queue_head"])}
        return f"id: {entry_id}\nevent: queue\ndata: {json.dumps(head)}\n\n".encode()
    data = {
        "call_sid": fields.get("sid"),
        "status": fields.get("status"),
        "position": _integer(fields.get("position")),
    }
    return f"id: {entry_id}\nevent: status\ndata: {json.dumps(data)}\n\n".encode()


async def _start_id(redis: RedisClient, stream: str, resume: str | None) -> tuple[str, bool]:
    """Where to read from, and whether the client may have missed trimmed entries."""
    newest = entries(await redis.xrevrange(stream, count=1))
    newest_id = newest[0][0] if newest else "0-0"
    if resume is None or id_key(resume) >= id_key(newest_id):
        # From now on (an id from the future would wait forever: treat it as now). The
        # id is pinned before the response starts, so nothing slips between the page's
        # snapshot, taken once the stream is open, and the first read.
        return newest_id, False
    oldest = entries(await redis.xrange(stream, count=1))
    # The entry after the client's last one is gone: the cap trimmed what it missed.
    return resume, bool(oldest) and id_key(oldest[0][0]) > id_key(resume)


async def _backlog(
    redis: RedisClient, stream: str, after: str, until: str
) -> AsyncIterator[StreamEntry]:
    """The entries after ``after`` up to ``until``: what the hub had already handed out
    for this business when this stream joined (``Subscription.since``)."""
    while id_key(after) < id_key(until):
        page = entries(await redis.xrange(stream, min=f"({after}", max=until, count=BATCH))
        if not page:
            return
        for entry in page:
            yield entry
        after = page[-1][0]


async def _events(
    request: Request,
    redis: RedisClient,
    sub: Subscription,
    last_id: str,
    gap: bool,
    keepalive_s: int,
    expires_at: float,
    stopping: asyncio.Event,
) -> AsyncIterator[bytes]:
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    if gap:
        yield f"id: {last_id}\nevent: resync\ndata: {{}}\n\n".encode()
    try:
        stream = keys.status_stream(sub.business)
        async for entry_id, fields in _backlog(redis, stream, last_id, sub.since):
            last_id = entry_id
            yield _frame(entry_id, fields)
    except RedisError as exc:
        # The 200 is already sent: end the stream; the browser's EventSource comes back
        # after "retry" with Last-Event-ID, and gets a 503 while Redis is down.
        log.warning("status events: redis unavailable (%s); closing stream", exc)
        return
    stop = asyncio.ensure_future(stopping.wait())
    try:
        while not stop.done() and not await request.is_disconnected():
            if time.time() >= expires_at:
                # The token is no longer good: the client must come back with a new one.
                return
            wait_s = _wait_s(keepalive_s, expires_at)
            get = asyncio.ensure_future(sub.queue.get())
            await asyncio.wait({get, stop}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                if wait_s < keepalive_s:
                    # The wait was cut short by the token's expiry (the loop's timer may
                    # fire a hair before the wall clock reaches it): end, no keep-alive.
                    return
                if not stop.done():
                    yield b": keep-alive\n\n"
                continue
            entry = get.result()
            if entry is None:
                # It fell too far behind: end; the client resumes from Redis, losing nothing.
                return
            entry_id, fields = entry
            if id_key(entry_id) > id_key(last_id):  # the backlog may have sent it already
                last_id = entry_id
                yield _frame(entry_id, fields)
    finally:
        stop.cancel()


class _SubscribedStream(StreamingResponse):
    """Gives its subscription back however the response ends, even when the client left
    before the body started (a generator never started never runs its ``finally``)."""

    def __init__(self, body: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def events(request: Request) -> StreamingResponse:
    state = app_state(request)
    assert state.settings.jwt_secret
    grant = grant_of(request, state.settings.jwt_secret)
    b = grant.business_id
    header = request.headers.get("last-event-id", "").strip()
    # Anything that is not a stream id (a stale or foreign value) means "from now on".
    resume = header if _valid_id(header) else None
    # Read before the response starts, so an unreachable Redis is a 503, not a cut stream.
    last_id, gap = await _start_id(state.redis, keys.status_stream(b), resume)
    sub = state.hub.subscribe(b, last_id)  # past a cap: TooManyStreams, a 429
    try:
        await state.hub.wake()
    except BaseException:
        state.hub.unsubscribe(sub)
        raise
    body = _events(
        request,
        state.redis,
        sub,
        last_id,
        gap,
        state.settings.sse_keepalive_s,
        grant.exp,
        state.stopping.event,
    )
    return _SubscribedStream(body, lambda: state.hub.unsubscribe(sub))
