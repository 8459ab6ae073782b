"""Twilio SID and business id shapes. Anything that becomes part of a key or a path
goes through here first."""

from __future__ import annotations

import re

from calls.errors import BadRequest

CALL_SID = re.compile(r"CA[0-9a-f]{32}")
RECORDING_SID = re.compile(r"RE[0-9a-f]{32}")
ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
CONFERENCE_SID = re.compile(r"CF[0-9a-f]{32}")
# A stored recording's name and slot member: the call SID for a call's primary
# recording, the recording SID for any other.
STORED_SID = re.compile(r"(?:CA|RE)[0-9a-f]{32}")
# Business ids come from the CRM; keep them to a shape that is safe inside key hash
# tags (no braces) and log lines (no spaces or '=').
BUSINESS_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def call_sid(value: str, *, what: str = "call_sid") -> str:
    if not CALL_SID.fullmatch(value):
        raise BadRequest(f"{what} must be a Twilio Call SID (CA followed by 32 hex digits)")
    return value


def recording_sid(value: str, *, what: str = "RecordingSid") -> str:
    if not RECORDING_SID.fullmatch(value):
        raise BadRequest(f"{what} must be a Twilio Recording SID (RE + 32 hex digits)")
    return value


def conference_sid(value: str, *, what: str = "ConferenceSid") -> str:
    if not CONFERENCE_SID.fullmatch(value):
        raise BadRequest(f"{what} must be a Twilio Conference SID (CF + 32 hex digits)")
    return value


def slot_member(value: str, *, what: str = "sid") -> str:
    """A stored recording's name: a Call SID (a call's primary) or a Recording SID."""
    if not STORED_SID.fullmatch(value):
        raise BadRequest(f"{what} must be a Twilio Call or Recording SID (CA or RE + 32 hex)")
    return value


def business_id(value: str) -> str:
    if not BUSINESS_ID.fullmatch(value):
        raise BadRequest("business_id must be 1-64 characters of letters, digits, '_' or '-'")
    return value
