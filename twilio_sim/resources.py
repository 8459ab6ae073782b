"""JSON representations of recordings as Twilio's 2010-04-01 REST API returns them."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from typing import Any

from twilio_sim.models import SimRecording

API_VERSION = "2010-04-01"
PAGE_SIZE = 50


def recording_path(account_sid: str, recording_sid: str) -> str:
    return f"/{API_VERSION}/Accounts/{account_sid}/Recordings/{recording_sid}"


def recording_json(
    rec: SimRecording, *, account_sid: str, base_url: str, created: datetime
) -> dict[str, Any]:
    path = recording_path(account_sid, rec.recording_sid)
    stamp = format_datetime(created)
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "call_sid": rec.call_sid or None,
        "conference_sid": rec.conference_sid or None,
        "date_created": stamp,
        "date_updated": stamp,
        "start_time": stamp,
        # Twilio sends durations as strings; keeping that catches a client that assumes ints.
        "duration": str(rec.duration_s),
        "sid": rec.recording_sid,
        "price": None,
        "price_unit": "USD",
        "status": "completed",
        "channels": rec.channels,
        "source": rec.source,
        "error_code": None,
        "track": "both",
        "encryption_details": None,
        "uri": f"{path}.json",
        "media_url": f"{base_url}{path}",
        "subresource_uris": {
            "add_on_results": f"{path}/AddOnResults.json",
            "transcriptions": f"{path}/Transcriptions.json",
        },
    }


def recording_page(
    recordings: list[dict[str, Any]], *, account_sid: str, call_sid: str
) -> dict[str, Any]:
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}/Recordings.json"
    return {
        "recordings": recordings,
        "first_page_uri": f"{uri}?PageSize={PAGE_SIZE}&Page=0",
        "next_page_uri": None,
        "previous_page_uri": None,
        "page": 0,
        "page_size": PAGE_SIZE,
        "start": 0,
        "end": max(len(recordings) - 1, 0),
        "uri": f"{uri}?PageSize={PAGE_SIZE}&Page=0",
    }
