"""The admin API of the recording lifecycle (admin tokens only):

- ``DELETE /api/admin/businesses/{b}/calls/{call_sid}``: erase a call's recordings
  (every stored copy now; Twilio's copy through the workers' deletion queue).
- ``POST /api/admin/businesses/{b}/backfill``: ask the workers for a backfill (JSON
  ``since``, ``until`` as YYYY-MM-DD, ``numbers``, ``download``); 202.
- ``GET /api/admin/businesses/{b}/backfill``: how that backfill is doing.
"""

from __future__ import annotations

from datetime import date

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from calls import sids
from calls.errors import BadRequest, NotFound
from ingest.admin import MAX_BODY_BYTES, admin_business, json_object
from lifecycle.backfill import BackfillRequest
from lifecycle.backfill_jobs import job_status, submit
from lifecycle.erasure import Eraser


async def erase_call(request: Request) -> Response:
    state, b = admin_business(request)
    call_sid = sids.call_sid(request.path_params["call_sid"])
    done = await Eraser(state.redis, state.registry, state.store).erase_call(b, call_sid)
    return JSONResponse(
        {
            "call_sid": done.call_sid,
            "status": "erased",
            "already_erased": done.already,
            "recordings": list(done.recording_sids),
            "files_removed": done.files_removed,
        }
    )


def _date(body: dict[str, object], name: str) -> date | None:
    raw = body.get(name)
    if raw in (None, ""):
        return None
    try:
        return date.fromisoformat(str(raw))
    except ValueError:
        raise BadRequest(f"{name} must be a date (YYYY-MM-DD)") from None


async def _json_body(request: Request) -> dict[str, object]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"body over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    return json_object(raw)


async def start_backfill(request: Request) -> Response:
    state, b = admin_business(request)
    body = await _json_body(request)
    numbers = body.get("numbers", [])
    if not isinstance(numbers, list) or not all(isinstance(n, str) for n in numbers):
        raise BadRequest("numbers must be a list of phone numbers")
    download = body.get("download", False)
    if not isinstance(download, bool):
        raise BadRequest("download must be true or false")
    backfill = BackfillRequest(
        business_id=b,
        since=_date(body, "since"),
        until=_date(body, "until"),
        numbers=tuple(numbers),
        download=download,
    )
    await submit(state.redis, backfill)
    return JSONResponse({"business_id": b, "state": "queued"}, status_code=202)


async def backfill_status(request: Request) -> Response:
    state, b = admin_business(request)
    status = await job_status(state.redis, b)
    if status is None:
        raise NotFound("no backfill was asked for this business")
    return JSONResponse(status, headers={"Cache-Control": "no-store"})
