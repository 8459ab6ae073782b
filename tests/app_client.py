"""The web application in this test's process, built by the real factory, its lifespan
run, and called over httpx's ASGI transport against the test Redis: the HTTP layer
checked in milliseconds, no uvicorn process to start. (Streaming responses, such as
``/api/events``, need a real server: ``tests/stack.py``.)"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from config.settings import WEB_REQUIRED, load_settings
from ingest.factory import create_app
from ingest.shutdown import SIGNALS
from tests.stack import JWT_SECRET


@contextlib.asynccontextmanager
async def web_app(redis_url: str, tmp: Path, **env: str) -> AsyncIterator[httpx.AsyncClient]:
    """``env`` adds to (or overrides) the minimal web settings."""
    settings = load_settings(
        {
            "REDIS_URL": redis_url,
            "CALLREC_JWT_SECRET": JWT_SECRET,
            "RECORDINGS_DIR": str(tmp / "recordings"),
            **env,
        },
        require=WEB_REQUIRED,
    )
    app = create_app(settings)
    # The lifespan chains its stop handler in front of this process's SIGTERM/SIGINT
    # handlers (pytest's own among them): put them back afterwards.
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://callrec") as client:
                yield client
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)
