"""HTTP Basic auth for the account-scoped REST paths, answered the way Twilio does."""

from __future__ import annotations

import base64
import binascii
import logging

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from twilio_sim.accounts import AccountBook
from twilio_sim.errors import not_found, unauthorized

logger = logging.getLogger(__name__)


def credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class TwilioAuth:
    """Mounted under /Accounts/{account_sid}: the credentials must be the account's own
    (auth token or API key) or its parent's. 401 when they authenticate nothing, 404 when
    they belong to another account (Twilio hides other accounts' resources)."""

    def __init__(self, app: ASGIApp, *, book: AccountBook, region: str | None = None) -> None:
        self.app = app
        self.book = book
        self.region = region

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        creds = credentials(Headers(scope=scope).get("authorization", ""))
        if creds is None:
            await unauthorized()(scope, receive, send)
            return
        target = scope["path_params"].get("account_sid", "")
        status = self.book.authorize(creds[0], creds[1], target, self.region)
        if status == 401:
            logger.debug("401 for %s", scope["path"])
            await unauthorized()(scope, receive, send)
            return
        if status == 404:
            await not_found(scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive, send)
