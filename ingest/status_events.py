"""``GET /api/events``: Server-Sent Events, one per status change of the business's
recordings, read from its own status stream (so one business never sees another's)
and resumable with ``Last-Event-ID``."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import StreamingResponse

from calls import keys
from calls.redis_values import entries, stream_entries
from ingest.auth import business_of
from ingest.state import app_state

log = logging.getLogger(__name__)

KEEPALIVE_S = 15
STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


async def _events(request: Request, b: str, last_id: str) -> AsyncIterator[bytes]:
    redis = app_state(request).redis
    stream = keys.status_stream(b)
    yield b"retry: 2000\n\n"
    while not await request.is_disconnected():
        try:
            reply = await redis.xread({stream: last_id}, block=KEEPALIVE_S * 1000, count=100)
        except RedisError as exc:
            # The 200 is already sent: end the stream; the browser's EventSource comes
            # back after "retry" with Last-Event-ID, and gets a 503 while Redis is down.
            log.warning("status events: redis unavailable (%s); closing stream", exc)
            return
        if not reply:
            yield b": keep-alive\n\n"
            continue
        for entry_id, f in stream_entries(reply):
            last_id = entry_id
            position = f.get("position") or None
            data = {
                "call_sid": f.get("sid"),
                "status": f.get("status"),
                "position": int(position) if position and position.isdigit() else None,
            }
            yield f"id: {last_id}\nevent: status\ndata: {json.dumps(data)}\n\n".encode()


async def events(request: Request) -> StreamingResponse:
    state = app_state(request)
    assert state.settings.jwt_secret
    b = business_of(request, state.settings.jwt_secret)
    resume = request.headers.get("last-event-id", "")
    # "$" = only changes from now on; a valid Last-Event-ID replays what was missed.
    last_id = resume if STREAM_ID.fullmatch(resume) else "$"
    if last_id == "$":
        # Pin "now" to a concrete id, so nothing slips between two blocking reads; read
        # before the response starts, so an unreachable Redis is a 503, not a cut stream.
        newest = entries(await state.redis.xrevrange(keys.status_stream(b), count=1))
        last_id = newest[0][0] if newest else "0-0"
    return StreamingResponse(
        _events(request, b, last_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
