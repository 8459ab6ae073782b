"""``GET /``: the recent-calls page, a static file that talks to the API from the browser."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

# Everything the page needs is inline or from this origin; nothing else may load or frame it.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; media-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_PAGE = resources.files("ingest").joinpath("static", "index.html").read_bytes()


async def index(request: Request) -> Response:
    # The page holds no data: it never touches Redis or storage, let alone Twilio.
    return HTMLResponse(
        _PAGE,
        headers={
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",  # the URL may carry ?token=
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": CSP,
        },
    )
