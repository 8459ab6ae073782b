"""Play, download and status of a call's recording.

Stored: the bytes come from storage with Range support. Not stored: one ``request``
event is published (at most once per pending recording) and the client gets 202 with
its place in the queue; it learns the rest from ``/api/events`` or by asking again.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from calls import keys, sids, stats
from calls.errors import NotFound
from calls.events import request_download
from calls.registry import PENDING_STATES, Call
from ingest.auth import business_of
from ingest.serving import serve_stored
from ingest.state import AppState, app_state

RETRY_AFTER_S = 2


async def _call(request: Request, state: AppState) -> tuple[str, Call]:
    assert state.settings.jwt_secret
    b = business_of(request, state.settings.jwt_secret)
    sid = sids.call_sid(request.path_params["call_sid"])
    call = await state.registry.get(b, sid)
    if call is None:
        # Another business's call is indistinguishable from an unknown one.
        raise NotFound("no such call")
    return b, call


async def playable(state: AppState, b: str, call: Call) -> Call:
    """The call whose recording plays for ``call``: its own, else its parent's (a
    <Dial> child leg has no recording of its own)."""
    if call.has_own_recording:
        return call
    if call.parent_sid:
        parent = await state.registry.get(b, call.parent_sid)
        if parent is not None:
            return parent
    if call.twilio_unavailable or not call.is_finished:
        raise NotFound("this call has no recording")
    # Known only from its status callback: the worker will ask Twilio for its recording.
    return call


async def _position(state: AppState, b: str, sid: str) -> int | None:
    pos = await state.redis.lpos(keys.queue(b), sid)
    return pos + 1 if isinstance(pos, int) else None


async def _pending(state: AppState, b: str, target: Call) -> Response:
    status = target.state
    if status not in PENDING_STATES:
        if target.twilio_unavailable:
            await stats.count(state.redis, stats.play_field("not_found"))
            raise NotFound("this call has no recording")
        await request_download(state.redis, b, target.sid, source="play")
        status = "queued"
    position = await _position(state, b, target.sid) if status == "queued" else None
    await stats.count(state.redis, stats.play_field("pending"))
    return JSONResponse(
        {"status": status, "position": position},
        status_code=202,
        headers={"Retry-After": str(RETRY_AFTER_S), "Cache-Control": "no-store"},
    )


async def _play(request: Request, *, attachment: bool) -> Response:
    state = app_state(request)
    try:
        # An unknown call (or another business's) is a not_found play like a call
        # without a recording.
        b, call = await _call(request, state)
        target = await playable(state, b, call)
    except NotFound:
        await stats.count(state.redis, stats.play_field("not_found"))
        raise
    stored = await state.store.stat(target.sid)
    if stored is None:
        return await _pending(state, b, target)
    if target.state != "ready":
        await state.registry.mark_ready(b, target.sid)
    await stats.count(state.redis, stats.play_field("hit"))
    filename = f"{call.sid}.mp3" if attachment else None
    return await serve_stored(request, state, stored, filename=filename)


async def play(request: Request) -> Response:
    return await _play(request, attachment=False)


async def download(request: Request) -> Response:
    return await _play(request, attachment=True)


async def status(request: Request) -> Response:
    state = app_state(request)
    b, call = await _call(request, state)
    try:
        target = await playable(state, b, call)
    except NotFound:
        return JSONResponse({"call_sid": call.sid, "status": "none", "position": None})
    stored = await state.store.stat(target.sid)
    word = "ready" if stored is not None else target.state
    if word == "ready" and stored is None:
        word = "available"  # the stored copy went away; playing fetches it again
    position = await _position(state, b, target.sid) if word == "queued" else None
    return JSONResponse(
        {"call_sid": call.sid, "status": word, "position": position},
        headers={"Cache-Control": "no-store"},
    )
