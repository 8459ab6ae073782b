"""``GET /api/events``: Server-Sent Events, one per status change of the business's
recordings, read from its own status stream (so one business never sees another's)
and resumable with ``Last-Event-ID``."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse

from calls import keys
from calls.redis_values import entries, stream_entries
from ingest.auth import business_of
from ingest.state import app_state

KEEPALIVE_S = 15
STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


async def _events(request: Request, b: str, last_id: str) -> AsyncIterator[bytes]:
    redis = app_state(request).redis
    stream = keys.status_stream(b)
    if last_id == "$":
        # Pin "now" to a concrete id, so nothing slips between two blocking reads.
        newest = entries(await redis.xrevrange(stream, count=1))
        last_id = newest[0][0] if newest else "0-0"
    yield b"retry: 2000\n\n"
    while not await request.is_disconnected():
        reply = await redis.xread({stream: last_id}, block=KEEPALIVE_S * 1000, count=100)
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
    return StreamingResponse(
        _events(request, b, last_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
