"""The ASGI entry point the Procfile names: ``uvicorn ingest.app:app``."""

from __future__ import annotations

import logging
import sys
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from calls.errors import RedisTlsError
from config.logging import configure_logging
from config.settings import WEB_REQUIRED, SettingsError, load_settings
from ingest.factory import create_app


class OneLineStartFailure:
    """A start that fails on configuration (Redis refusing our TLS settings) is one line
    in the log, as a bad variable is, not a traceback: Starlette hands uvicorn the
    formatted traceback as the failure message; this puts the error's own text there."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_one_line(message: Message) -> None:
            # Starlette sends the failure from inside its ``except`` block.
            failure: Any = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" and isinstance(failure, RedisTlsError):
                message = {**message, "message": f"callrec web: {failure}"}
            await send(message)

        await self.app(scope, receive, send_one_line)


try:
    _settings = load_settings(require=WEB_REQUIRED)
except SettingsError as exc:
    print(f"callrec web: {exc}", file=sys.stderr)
    sys.exit(2)

configure_logging(_settings.log_format)
if _settings.public_base_url is None:
    # `callrec dev` always sets it, so this is a deployment that forgot it.
    logging.getLogger("ingest").warning(
        "PUBLIC_BASE_URL is unset: Twilio signs each webhook with the URL it called, and "
        "behind a proxy or PaaS router this process sees another one, so every webhook "
        "would be answered 403; set PUBLIC_BASE_URL to the https:// URL Twilio calls"
    )
app = OneLineStartFailure(create_app(_settings))
