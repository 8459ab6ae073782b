"""``GET /api/calls``: the business's calls, newest first. Reads the registry only:
listing never starts a download (guarantee 3)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from calls.digits import ascii_digits
from calls.errors import BadRequest
from ingest.auth import business_of
from ingest.state import app_state

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not ascii_digits(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


async def list_calls(request: Request) -> Response:
    state = app_state(request)
    assert state.settings.jwt_secret
    b = business_of(request, state.settings.jwt_secret)
    limit = _limit(request)
    before = request.query_params.get("before") or None
    if before is not None and len(before) > 200:
        raise BadRequest("before is not a cursor this API returned")
    calls, next_cursor = await state.registry.page(b, limit=limit, before=before)
    recordings = await state.registry.recordings.recordings_of(calls)
    listed = [
        {**c.as_json(), "recordings": [r.as_json() for r in recordings[c.sid]]} for c in calls
    ]
    return JSONResponse(
        {"calls": listed, "next": next_cursor},
        headers={"Cache-Control": "no-store"},
    )
