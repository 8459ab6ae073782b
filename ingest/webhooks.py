"""Twilio's status callbacks. Signed form posts; unsigned or wrongly signed ones are
refused (403) before anything is read into the registry."""

from __future__ import annotations

import logging
import time
from email.utils import parsedate_to_datetime

from starlette.requests import Request
from starlette.responses import Response

from calls import sids
from calls.digits import ascii_digits
from calls.errors import BadRequest, Forbidden, PayloadTooLarge
from calls.events import request_download
from ingest.state import AppState, app_state

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 64 * 1024
CALL_FIELDS = {
    "ParentCallSid": "parent_call_sid",
    "From": "from",
    "To": "to",
    "Direction": "direction",
    "CallStatus": "status",
    "CallDuration": "duration",
}
RECORDING_STATUSES = ("in-progress", "completed", "absent", "failed")


def _signed_url(request: Request, state: AppState) -> str:
    # Behind a proxy the app's own view of its URL differs from the one Twilio signed.
    base = state.settings.public_base_url
    if not base:
        return str(request.url)
    query = request.url.query
    return f"{base}{request.url.path}" + (f"?{query}" if query else "")


async def _signed_form(request: Request, state: AppState) -> dict[str, str]:
    length = request.headers.get("content-length")
    if length is not None and (not ascii_digits(length) or int(length) > MAX_FORM_BYTES):
        raise PayloadTooLarge(f"webhook body over {MAX_FORM_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"webhook body over {MAX_FORM_BYTES} bytes")
    from urllib.parse import parse_qsl

    try:
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise BadRequest("webhook body is not UTF-8 form data") from None
    signature = request.headers.get("x-twilio-signature")
    if not signature:
        raise Forbidden("missing X-Twilio-Signature")
    if state.validator is None:
        raise Forbidden("webhook signing key (TWILIO_AUTH_TOKEN) is not configured")
    if not state.validator.validate(_signed_url(request, state), params, signature):
        raise Forbidden("X-Twilio-Signature does not match")
    return params


def _business(request: Request) -> str:
    return sids.business_id(request.path_params["business_id"])


def _timestamp_ms(value: str | None) -> int:
    if value:
        try:
            return int(parsedate_to_datetime(value).timestamp() * 1000)
        except (TypeError, ValueError, OverflowError):
            pass
    return int(time.time() * 1000)


def _int(params: dict[str, str], name: str) -> int:
    raw = params.get(name, "0") or "0"
    if not ascii_digits(raw) or len(raw) > 18:
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(raw)


async def call_status(request: Request) -> Response:
    state = app_state(request)
    b = _business(request)
    params = await _signed_form(request, state)
    sid = sids.call_sid(params.get("CallSid", ""), what="CallSid")
    parent = params.get("ParentCallSid", "")
    if parent:
        sids.call_sid(parent, what="ParentCallSid")
    fields = {name: params.get(twilio_name, "")[:64] for twilio_name, name in CALL_FIELDS.items()}
    await state.registry.apply_call_status(
        b,
        sid,
        sequence=_int(params, "SequenceNumber"),
        started_at_ms=_timestamp_ms(params.get("Timestamp")),
        fields=fields,
    )
    return Response(status_code=204)


async def recording_status(request: Request) -> Response:
    state = app_state(request)
    b = _business(request)
    params = await _signed_form(request, state)
    sid = sids.call_sid(params.get("CallSid", ""), what="CallSid")
    recording_sid = params.get("RecordingSid", "")
    if recording_sid:
        sids.recording_sid(recording_sid)
    twilio_status = params.get("RecordingStatus", "")
    if twilio_status not in RECORDING_STATUSES:
        raise BadRequest(f"RecordingStatus must be one of {', '.join(RECORDING_STATUSES)}")
    duration = params.get("RecordingDuration", "")
    if duration and not (ascii_digits(duration) and len(duration) <= 9):
        raise BadRequest("RecordingDuration must be a non-negative integer")
    new_state = await state.registry.apply_recording_status(
        b,
        sid,
        recording_sid=recording_sid,
        twilio_status=twilio_status,
        duration=duration,
        now_ms=int(time.time() * 1000),
    )
    # Only a recording nobody has asked for yet is requested: a redelivered callback
    # finds it queued, processing or ready and does nothing.
    prefetch = state.settings.prefetch_on_webhook
    if twilio_status == "completed" and new_state == "available" and prefetch:
        await request_download(state.redis, state.shards, b, sid, source="webhook")
    return Response(status_code=204)
