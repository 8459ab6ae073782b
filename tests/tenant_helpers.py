"""Helpers for tests of businesses on their own Twilio accounts: registering calls
through webhooks signed by a given account, and the admin API."""

from __future__ import annotations

import time

import httpx

from ingest.auth import issue_admin_token
from tests.helpers import call_sid, rec_sid
from tests.stack import JWT_SECRET
from twilio_sim import SimRecording, Simulator
from twilio_sim.accounts import SimAccount

# A fixed Fernet key for tests (URL-safe base64 of 32 bytes).
SECRETS_KEY = "dGVzdC1rZXktZm9yLWNhbGxyZWMtdGVuYW50cy0zMmI="


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_admin_token(JWT_SECRET, 600)}"}


def put_account(web: str, b: str, account: SimAccount, **extra: str) -> httpx.Response:
    body = {"account_sid": account.sid, "auth_token": account.auth_token, **extra}
    return httpx.put(
        f"{web}/api/admin/businesses/{b}/twilio-account",
        json=body,
        headers=admin_headers(),
        timeout=10,
    )


def register_on(
    sim: Simulator,
    web: str,
    business: str,
    n: int,
    account_sid: str | None,
    *,
    size_bytes: int = 8 * 1024,
    recording_webhook: bool = True,
    call_webhook: bool = True,
    parent: str = "",
) -> SimRecording:
    """A call (and its recording, filed under ``account_sid``) registered through
    webhooks that account signs (the recording's alone registers the call too)."""
    rec = SimRecording(
        business, call_sid(n), rec_sid(n), size_bytes=size_bytes, account_sid=account_sid
    )
    sim.add_recording(rec)
    stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(1_700_000_000 + n))
    hooks = f"{web}/webhooks/twilio/{business}"
    if call_webhook:
        status = sim.send_call_status(
            f"{hooks}/call-status",
            call_sid=rec.call_sid,
            parent_call_sid=parent,
            timestamp=stamp,
            sequence_number=1,
            account_sid=account_sid,
        )
        assert status == 204, status
    if recording_webhook:
        assert sim.send_recording_status(f"{hooks}/recording-status", rec) == 204
    return rec
