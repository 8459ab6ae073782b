"""``GET /api/events``: Server-Sent Events, one per status change of the business's
recordings (``call_sid``, ``status``, ``position``).

Fed from the business's own status stream ``rec_status:{b}`` (written by the slot and
registry scripts), so a business never sees another's events. Each event's ``id`` is its
stream id: a reconnecting ``EventSource`` sends it back as ``Last-Event-ID`` and gets
what it missed. A stream is capped (``MAXLEN ~ 1000``); when a client comes back from
further than the oldest kept entry, it gets a ``resync`` event telling it to ask for the
current statuses again rather than trust a stream with a hole in it.

Each open stream holds one Redis connection in a blocking ``XREAD``, from a client of
its own (``AppState.blocking_redis``) whose socket timeout outlasts the block: on the
request client's default timeout (5 s in redis-py 8) the read would time out before
the block ends and drop the stream. The block ends every ``SSE_KEEPALIVE_SECONDS`` with
a comment line, which keeps proxies from closing an idle connection and lets the server
notice a client that went away. A stream ends when its token expires (``exp``): the
browser's ``EventSource`` reconnects, gets a 401 and the page asks for a new token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import StreamingResponse

from calls import keys
from calls.digits import ascii_digits
from calls.redis_client import RedisClient
from calls.redis_values import entries, stream_entries
from ingest.auth import grant_of
from ingest.state import app_state

log = logging.getLogger(__name__)

STREAM_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
RECONNECT_MS = 2000
BATCH = 100
MAX_ID_PART = 2**64 - 1
# How much longer than its block a reader's socket waits for Redis's answer.
SOCKET_MARGIN_S = 10


def read_socket_timeout_s(keepalive_s: int) -> int:
    """The socket timeout of the client that reads for streams: longer than any block."""
    return keepalive_s + SOCKET_MARGIN_S


def _block_ms(keepalive_s: int, expires_at: float) -> int:
    """The next read's block: a keep-alive period, cut short by the token's expiry.
    At least 1 ms: ``BLOCK 0`` would block forever."""
    return max(1, min(keepalive_s * 1000, math.ceil((expires_at - time.time()) * 1000)))


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _valid_id(value: str) -> bool:
    match = STREAM_ID.fullmatch(value)
    return match is not None and all(int(part) <= MAX_ID_PART for part in match.groups())


def _frame(entry_id: str, fields: dict[str, str]) -> bytes:
    position = fields.get("position") or ""
    data = {
        "call_sid": fields.get("sid"),
        "status": fields.get("status"),
        "position": int(position) if ascii_digits(position) else None,
    }
    return f"id: {entry_id}\nevent: status\ndata: {json.dumps(data)}\n\n".encode()


async def _start_id(redis: RedisClient, stream: str, resume: str | None) -> tuple[str, bool]:
    """Where to read from, and whether the client may have missed trimmed entries."""
    newest = entries(await redis.xrevrange(stream, count=1))
    newest_id = newest[0][0] if newest else "0-0"
    if resume is None or _id_key(resume) >= _id_key(newest_id):
        # From now on (an id from the future would wait forever: treat it as now). The
        # id is pinned before the response starts, so nothing slips between the page's
        # snapshot, taken once the stream is open, and the first read.
        return newest_id, False
    oldest = entries(await redis.xrange(stream, count=1))
    # The entry after the client's last one is gone: the cap trimmed what it missed.
    return resume, bool(oldest) and _id_key(oldest[0][0]) > _id_key(resume)


async def _events(
    request: Request,
    redis: RedisClient,
    stream: str,
    last_id: str,
    gap: bool,
    keepalive_s: int,
    expires_at: float,
    stopping: asyncio.Event,
) -> AsyncIterator[bytes]:
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    if gap:
        yield f"id: {last_id}\nevent: resync\ndata: {{}}\n\n".encode()
    stop = asyncio.ensure_future(stopping.wait())
    try:
        while not stop.done() and not await request.is_disconnected():
            if time.time() >= expires_at:
                # The token is no longer good: the client must come back with a new one.
                return
            block_ms = _block_ms(keepalive_s, expires_at)
            read = asyncio.ensure_future(
                redis.xread({stream: last_id}, block=block_ms, count=BATCH)
            )
            await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                # The process is stopping: end the stream; the client resumes elsewhere.
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await read
                return
            try:
                reply = read.result()
            except RedisError as exc:
                # The 200 is already sent: end the stream; the browser's EventSource comes
                # back after "retry" with Last-Event-ID, and gets a 503 while Redis is down.
                log.warning("status events: redis unavailable (%s); closing stream", exc)
                return
            if not reply:
                if time.time() < expires_at:
                    yield b": keep-alive\n\n"
                continue
            for entry_id, fields in stream_entries(reply):
                last_id = entry_id
                yield _frame(entry_id, fields)
    finally:
        stop.cancel()


async def events(request: Request) -> StreamingResponse:
    state = app_state(request)
    assert state.settings.jwt_secret
    grant = grant_of(request, state.settings.jwt_secret)
    b = grant.business_id
    header = request.headers.get("last-event-id", "").strip()
    # Anything that is not a stream id (a stale or foreign value) means "from now on".
    resume = header if _valid_id(header) else None
    stream = keys.status_stream(b)
    # Read before the response starts, so an unreachable Redis is a 503, not a cut stream.
    last_id, gap = await _start_id(state.redis, stream, resume)
    return StreamingResponse(
        _events(
            request,
            state.blocking_redis,
            stream,
            last_id,
            gap,
            state.settings.sse_keepalive_s,
            grant.exp,
            state.stopping.event,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
