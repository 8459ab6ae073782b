"""HTTP Basic auth for the account-scoped REST paths, answered the way Twilio does."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from twilio_sim.errors import not_found, unauthorized

logger = logging.getLogger(__name__)


def _credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class TwilioAuth:
    """Mounted under /Accounts/{account_sid}: 401 on bad credentials, 404 on a foreign account."""

    def __init__(self, app: ASGIApp, *, account_sid: str, auth_token: str) -> None:
        self.app = app
        self.account_sid = account_sid
        self.auth_token = auth_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        creds = _credentials(Headers(scope=scope).get("authorization", ""))
        if creds is None or not (
            hmac.compare_digest(creds[0].encode(), self.account_sid.encode())
            and hmac.compare_digest(creds[1].encode(), self.auth_token.encode())
        ):
            logger.debug("401 for %s", scope["path"])
            await unauthorized()(scope, receive, send)
            return
        if scope["path_params"].get("account_sid") != self.account_sid:
            await not_found(scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive, send)
