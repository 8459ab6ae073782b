"""``GET /``: the recent-calls page, a static file that talks to the API from the browser."""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from config.settings import Settings
from ingest.state import app_state

# Everything the page needs is inline or from this origin; nothing else may load or frame
# it. Audio may also come from the bucket when plays are redirected to presigned URLs.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; media-src {media}; frame-ancestors 'none'; base-uri 'none'"
)


def content_security_policy(settings: Settings) -> str:
    media = "'self'"
    s3 = settings.s3
    if settings.storage == "s3" and s3 is not None and s3.serve_via == "redirect":
        if s3.endpoint_url:  # path-style addressing: the endpoint's own origin
            parts = urlsplit(s3.endpoint_url)
            media += f" {parts.scheme}://{parts.netloc}"
        else:  # AWS: virtual-hosted bucket names
            media += " https://*.amazonaws.com"
    return CSP.format(media=media)


_PAGE = resources.files("ingest").joinpath("static", "index.html").read_bytes()


async def index(request: Request) -> Response:
    # The page holds no data: it never touches Redis or storage, let alone Twilio.
    return HTMLResponse(
        _PAGE,
        headers={
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",  # the URL may carry ?token=
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": content_security_policy(app_state(request).settings),
        },
    )
