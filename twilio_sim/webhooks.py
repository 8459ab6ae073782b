"""Twilio-style signed status callbacks, posted to callrec like the real thing would."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
from twilio.request_validator import RequestValidator

from twilio_sim.models import DEFAULT_FROM, DEFAULT_TO, SimRecording
from twilio_sim.resources import recording_path

logger = logging.getLogger(__name__)

TIMEOUT_S = 10.0


def rfc2822_now() -> str:
    return format_datetime(datetime.now(UTC))


def call_status_params(
    *,
    account_sid: str,
    call_sid: str,
    parent_call_sid: str = "",
    from_: str = DEFAULT_FROM,
    to: str = DEFAULT_TO,
    direction: str = "inbound",
    call_status: str = "completed",
    duration_s: int = 30,
    timestamp: str | None = None,
    sequence_number: int = 0,
) -> dict[str, str]:
    params = {
        "AccountSid": account_sid,
        "CallSid": call_sid,
        "From": from_,
        "To": to,
        "Direction": direction,
        "CallStatus": call_status,
        "CallDuration": str(duration_s),
        "Timestamp": timestamp or rfc2822_now(),
        "SequenceNumber": str(sequence_number),
    }
    # Twilio leaves the field out entirely for a parent leg, rather than sending it empty.
    if parent_call_sid:
        params["ParentCallSid"] = parent_call_sid
    return params


def recording_status_params(
    rec: SimRecording, *, account_sid: str, base_url: str, status: str, error_code: str
) -> dict[str, str]:
    params = {
        "AccountSid": account_sid,
        "RecordingSid": rec.recording_sid,
        "RecordingUrl": base_url + recording_path(account_sid, rec.recording_sid),
        "RecordingStatus": status,
        "RecordingDuration": str(rec.duration_s),
        "RecordingChannels": str(rec.channels),
        "RecordingSource": rec.source,
        "RecordingStartTime": format_datetime(rec.created_at or datetime.now(UTC)),
    }
    # A conference recording's callback names the conference, and no call.
    if rec.call_sid:
        params["CallSid"] = rec.call_sid
    if rec.conference_sid:
        params["ConferenceSid"] = rec.conference_sid
    if error_code:
        params["ErrorCode"] = error_code
    return params


def conference_status_params(
    *,
    account_sid: str,
    conference_sid: str,
    call_sid: str,
    event: str = "participant-join",
    timestamp: str | None = None,
    sequence_number: int = 0,
) -> dict[str, str]:
    params = {
        "AccountSid": account_sid,
        "ConferenceSid": conference_sid,
        "StatusCallbackEvent": event,
        "Timestamp": timestamp or rfc2822_now(),
        "SequenceNumber": str(sequence_number),
    }
    # Conference-wide events (conference-start, -end) name no participant.
    if call_sid:
        params["CallSid"] = call_sid
    return params


def post_signed(url: str, params: dict[str, str], auth_token: str) -> int:
    """POST the form with X-Twilio-Signature over the exact URL posted to; returns the status."""
    signature = RequestValidator(auth_token).compute_signature(url, params)
    response = httpx.post(
        url, data=params, headers={"X-Twilio-Signature": signature}, timeout=TIMEOUT_S
    )
    logger.debug("webhook %s -> %s", url, response.status_code)
    return response.status_code
