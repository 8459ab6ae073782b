"""Twilio's status callbacks. Signed form posts; unsigned or wrongly signed ones are
refused (403) before anything is read into the registry."""

from __future__ import annotations

import logging
import re
import time
from email.utils import parsedate_to_datetime

from starlette.requests import Request
from starlette.responses import Response
from twilio.request_validator import RequestValidator

from calls import sids
from calls.digits import ascii_digits
from calls.errors import BadRequest, Forbidden, PayloadTooLarge
from calls.events import request_download
from calls.recordings import RecordingMeta
from ingest.state import AppState, app_state
from tenants.ownership import claim

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
# Twilio's RecordingSource and StatusCallbackEvent words: short, lower/upper letters.
SOURCE = re.compile(r"[A-Za-z]{1,40}")
EVENT = re.compile(r"[a-z]+(?:-[a-z]+){0,3}")


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
    token = await state.webhook_accounts.token_for(_business(request), params.get("AccountSid", ""))
    if not RequestValidator(token).validate(_signed_url(request, state), params, signature):
        raise Forbidden("X-Twilio-Signature does not match")
    return params


async def _owned(state: AppState, b: str, *sids: str) -> bool:
    """Claim the SIDs for ``b``; a SID another business registered first is not ``b``'s
    to touch: the callback is answered 204 and changes nothing."""
    if await claim(state.redis, b, *sids):
        return True
    log.warning(
        "FOREIGN_SID business_id=%s sids=%s: registered by another business; ignored",
        b,
        ",".join(s for s in sids if s),
    )
    return False


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
    # Validated above: the business's account, whose path its media is filed under.
    fields["account_sid"] = params["AccountSid"]
    if not await _owned(state, b, sid):
        return Response(status_code=204)
    await state.registry.apply_call_status(
        b,
        sid,
        sequence=_int(params, "SequenceNumber"),
        started_at_ms=_timestamp_ms(params.get("Timestamp")),
        fields=fields,
    )
    return Response(status_code=204)


def _digits(params: dict[str, str], name: str, max_len: int = 9) -> str:
    raw = params.get(name, "")
    if raw and not (ascii_digits(raw) and len(raw) <= max_len):
        raise BadRequest(f"{name} must be a non-negative integer")
    return raw


def _recording_meta(params: dict[str, str]) -> RecordingMeta:
    source = params.get("RecordingSource", "")
    if source and not SOURCE.fullmatch(source):
        raise BadRequest("RecordingSource must be a word such as DialVerb or Conference")
    start = params.get("RecordingStartTime", "")
    return RecordingMeta(
        duration=_digits(params, "RecordingDuration"),
        channels=_digits(params, "RecordingChannels", 1),
        source=source,
        start_ms=str(_timestamp_ms(start)) if start else "",
        error_code=_digits(params, "ErrorCode", 6),
    )


async def recording_status(request: Request) -> Response:
    state = app_state(request)
    b = _business(request)
    params = await _signed_form(request, state)
    call_sid = params.get("CallSid", "")
    conference_sid = params.get("ConferenceSid", "")
    if call_sid:
        sids.call_sid(call_sid, what="CallSid")
    if conference_sid:
        sids.conference_sid(conference_sid)
    if not call_sid and not conference_sid:
        raise BadRequest("a recording callback needs a CallSid or a ConferenceSid")
    recording_sid = params.get("RecordingSid", "")
    if recording_sid:
        sids.recording_sid(recording_sid)
    elif not call_sid:
        raise BadRequest("a conference recording callback needs its RecordingSid")
    twilio_status = params.get("RecordingStatus", "")
    if twilio_status not in RECORDING_STATUSES:
        raise BadRequest(f"RecordingStatus must be one of {', '.join(RECORDING_STATUSES)}")
    meta = _recording_meta(params)
    now_ms = int(time.time() * 1000)
    if not await _owned(state, b, call_sid or conference_sid, recording_sid):
        return Response(status_code=204)
    if call_sid:
        update = await state.registry.apply_recording_status(
            b,
            call_sid,
            recording_sid=recording_sid,
            twilio_status=twilio_status,
            now_ms=now_ms,
            meta=meta,
        )
    else:
        # Stored once, listed on every call that joined the conference.
        update = await state.registry.recordings.apply_conference_recording(
            b,
            conference_sid,
            recording_sid=recording_sid,
            twilio_status=twilio_status,
            meta=meta,
            now_ms=now_ms,
        )
    if update.member:
        # Validated above: the account the recording is filed under; set before the
        # request event, so the worker reads it (from the slot member's hash).
        await state.registry.set_account(b, update.member, params["AccountSid"])
    # Only a recording nobody has asked for yet is requested: a redelivered callback
    # finds it queued, processing, ready or erased and does nothing.
    prefetch = state.settings.prefetch_on_webhook
    if twilio_status == "completed" and update.state == "available" and prefetch:
        await request_download(state.redis, state.shards, b, update.member, source="webhook")
    return Response(status_code=204)


async def conference_status(request: Request) -> Response:
    state = app_state(request)
    b = _business(request)
    params = await _signed_form(request, state)
    conference_sid = sids.conference_sid(params.get("ConferenceSid", ""))
    event = params.get("StatusCallbackEvent", "")
    if not EVENT.fullmatch(event):
        raise BadRequest("StatusCallbackEvent must be a conference event such as participant-join")
    call_sid = params.get("CallSid", "")
    if call_sid:
        sids.call_sid(call_sid, what="CallSid")
    elif event.startswith("participant-"):
        raise BadRequest(f"{event} needs the participant's CallSid")
    if not await _owned(state, b, conference_sid, call_sid):
        return Response(status_code=204)
    await state.registry.recordings.apply_conference_status(
        b, conference_sid, call_sid, event, now_ms=int(time.time() * 1000)
    )
    return Response(status_code=204)
