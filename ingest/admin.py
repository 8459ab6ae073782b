"""``/api/admin/...``: what a CRM backend does for its businesses, with an admin token.

``PUT|GET|DELETE /api/admin/businesses/{b}/twilio-account``: the business's own Twilio
account. Secrets go in and are never returned: GET shows only whether they are set.
"""

from __future__ import annotations

import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from calls import sids
from calls.errors import BadRequest, NotFound, PayloadTooLarge
from ingest.auth import require_admin
from ingest.state import AppState, app_state
from tenants.accounts import parse_account

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024


def admin_business(request: Request) -> tuple[AppState, str]:
    """The app state and the path's business, once the request shows an admin token."""
    state = app_state(request)
    assert state.settings.jwt_secret
    require_admin(request, state.settings.jwt_secret)
    return state, sids.business_id(request.path_params["business_id"])


async def _json_object(request: Request) -> dict[str, object]:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"body over {MAX_BODY_BYTES} bytes")
    return json_object(body)


def json_object(raw: bytes | bytearray) -> dict[str, object]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


async def put_twilio_account(request: Request) -> Response:
    state, b = admin_business(request)
    account = parse_account(await _json_object(request), state.settings.twilio.region_api_bases)
    await state.accounts.put(b, account)
    # The SID only: secrets never reach a log line.
    log.info("TWILIO_ACCOUNT_SET business_id=%s account=%s", b, account.account_sid)
    return JSONResponse(await state.accounts.describe(b))


async def get_twilio_account(request: Request) -> Response:
    state, b = admin_business(request)
    described = await state.accounts.describe(b)
    if described is None:
        raise NotFound("this business has no Twilio account of its own (it uses the main one)")
    return JSONResponse(described, headers={"Cache-Control": "no-store"})


async def delete_twilio_account(request: Request) -> Response:
    state, b = admin_business(request)
    if not await state.accounts.delete(b):
        raise NotFound("this business has no Twilio account of its own")
    log.info("TWILIO_ACCOUNT_DELETED business_id=%s", b)
    return Response(status_code=204)
