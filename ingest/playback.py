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
# A queued recording's ticket, from which the page follows its place as the head moves.
TICKET_HEADER = "X-Queue-Ticket"


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
    """The slot member whose recording plays for ``call``: its own primary, else its
    parent's (a <Dial> child leg has no recording of its own), else its conference's."""
    if call.has_own_recording:
        return call
    if call.parent_sid:
        parent = await state.registry.get(b, call.parent_sid)
        if parent is not None:
            return parent
    conference = await state.registry.recordings.conference_recording(call)
    if conference is not None:
        member = await state.registry.get(b, conference.member)
        if member is not None:
            return member
    if call.twilio_unavailable or not call.is_finished:
        raise NotFound("this call has no recording")
    # Known only from its status callback: the worker will ask Twilio for its recording.
    return call


async def _one(state: AppState, b: str, call: Call, recording_sid: str) -> Call:
    """The slot member of one recording the call lists (its own, or a conference's)."""
    sids.recording_sid(recording_sid, what="recording_sid")
    recording = await state.registry.recordings.find(call, recording_sid)
    member = None
    if recording is not None:
        member = await state.registry.get(b, recording.member)
    if member is None:
        raise NotFound("no such recording of this call")
    return member


async def _place(state: AppState, b: str, sid: str) -> tuple[int | None, int | None]:
    """A queued SID's exact place (1 = next) and its ticket, from which the page follows
    its place as ``queue`` events name the head's ticket."""
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.lpos(keys.queue(b), sid)
        pipe.hget(keys.tickets(b), sid)
        pos, ticket = await pipe.execute()
    return (pos + 1 if isinstance(pos, int) else None), (int(ticket) if ticket else None)


def _ticket_header(ticket: int | None) -> dict[str, str]:
    # A header, not a body field: the answers' JSON shape is the contract's.
    return {} if ticket is None else {TICKET_HEADER: str(ticket)}


async def _pending(state: AppState, b: str, target: Call) -> Response:
    status = target.state
    if status not in PENDING_STATES:
        if target.twilio_unavailable:
            await stats.count(state.redis, state.shards.of(b).stats, stats.play_field("not_found"))
            raise NotFound("this call has no recording")
        await request_download(state.redis, state.shards, b, target.member, source="play")
        status = "queued"
    position, ticket = await _place(state, b, target.member) if status == "queued" else (None, None)
    await stats.count(state.redis, state.shards.of(b).stats, stats.play_field("pending"))
    return JSONResponse(
        {"status": status, "position": position},
        status_code=202,
        headers={
            "Retry-After": str(RETRY_AFTER_S),
            "Cache-Control": "no-store",
            **_ticket_header(ticket),
        },
    )


async def _serve(
    request: Request, state: AppState, b: str, target: Call, filename: str | None
) -> Response:
    if target.state == "erased":
        await stats.count(state.redis, state.shards.of(b).stats, stats.play_field("not_found"))
        raise NotFound("this recording was erased")
    stored = await state.store.stat(target.member)
    if stored is None:
        return await _pending(state, b, target)
    if target.state != "ready":
        await state.registry.mark_ready(b, target.member)
    await stats.count(state.redis, state.shards.of(b).stats, stats.play_field("hit"))
    return await serve_stored(request, state, stored, filename=filename)


async def _play(request: Request, *, attachment: bool) -> Response:
    state = app_state(request)
    try:
        # An unknown call (or another business's) is a not_found play like a call
        # without a recording.
        b, call = await _call(request, state)
        target = await playable(state, b, call)
    except NotFound:
        # The business may be unknown here; any shard's counters do (the exporter sums
        # them), and a not-found play is rare enough not to make that hash hot.
        not_found = stats.play_field("not_found")
        await stats.count(state.redis, state.shards.current[0].stats, not_found)
        raise
    return await _serve(request, state, b, target, f"{call.sid}.mp3" if attachment else None)


async def _play_one(request: Request, *, attachment: bool) -> Response:
    state = app_state(request)
    b, call = await _call(request, state)
    try:
        target = await _one(state, b, call, request.path_params["recording_sid"])
    except NotFound:
        await stats.count(state.redis, state.shards.of(b).stats, stats.play_field("not_found"))
        raise
    # Named as stored: the primary as <call_sid>.mp3, any other as <recording_sid>.mp3.
    return await _serve(request, state, b, target, f"{target.member}.mp3" if attachment else None)


async def play(request: Request) -> Response:
    return await _play(request, attachment=False)


async def download(request: Request) -> Response:
    return await _play(request, attachment=True)


async def play_one(request: Request) -> Response:
    return await _play_one(request, attachment=False)


async def download_one(request: Request) -> Response:
    return await _play_one(request, attachment=True)


async def _status_of(state: AppState, b: str, call: Call, target: Call) -> Response:
    stored = await state.store.stat(target.member)
    word = "ready" if stored is not None and target.state != "erased" else target.state
    if word == "ready" and stored is None:
        word = "available"  # the stored copy went away; playing fetches it again
    position, ticket = await _place(state, b, target.member) if word == "queued" else (None, None)
    return JSONResponse(
        {"call_sid": call.sid, "status": word, "position": position},
        headers={"Cache-Control": "no-store", **_ticket_header(ticket)},
    )


async def status(request: Request) -> Response:
    state = app_state(request)
    b, call = await _call(request, state)
    try:
        target = await playable(state, b, call)
    except NotFound:
        return JSONResponse({"call_sid": call.sid, "status": "none", "position": None})
    return await _status_of(state, b, call, target)


async def status_one(request: Request) -> Response:
    state = app_state(request)
    b, call = await _call(request, state)
    target = await _one(state, b, call, request.path_params["recording_sid"])
    response = await _status_of(state, b, call, target)
    return response
