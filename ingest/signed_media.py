"""``GET|HEAD /media/<file>?expires=&md5=``: the signed media URL plays redirect to with
``SERVE_VIA=signed``, served by the app when no nginx is in front.

The URL itself is the authorisation (``ingest/signed_urls.py``): no JWT, no tenant lookup,
no Redis, so this route keeps serving while Redis is down. Range, conditionals and the
body are ``ingest/fileserve.py``'s, as for every other local file.

It is the one route a player hits many times per play (every seek), so it runs in front
of Starlette's middleware and router (:class:`SignedMediaFront`): a request to it costs
the signature check, a stat and the read, and nothing else.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from calls.errors import CallrecError, Forbidden, NotFound
from config.settings import SignedUrlSettings
from ingest.errors import callrec_error
from ingest.fileserve import serve_file
from ingest.signed_urls import MEDIA_PREFIX, verify
from storage.base import make_etag

_METHODS = ("GET", "HEAD")


def media_response(request: Request, signed: SignedUrlSettings, recordings_dir: Path) -> Response:
    """The answer to a GET/HEAD of a signed media URL; raises CallrecError when refused."""
    query = request.query_params
    filename = query.get("filename")
    verdict = verify(
        signed.secret,
        path=request.scope["path"],
        expires=query.get("expires"),
        md5=query.get("md5"),
        filename=filename,
        now_s=time.time(),
    )
    if verdict.name is None:
        raise Forbidden(f"signed media URL refused: {verdict.reason}")
    # The name is a strict SID pattern with no separator: it cannot leave the directory.
    path = recordings_dir / verdict.name
    try:
        # On the event loop: a stat of a recently played file is a dentry-cache lookup,
        # far cheaper than the thread hop that would wrap it.
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound("no such recording") from None
    return serve_file(
        request,
        path,
        size=st.st_size,
        etag=make_etag(st.st_size, st.st_mtime_ns),
        last_modified=st.st_mtime,
        filename=filename or None,
    )


class SignedMediaFront:
    """ASGI app answering ``/media/...`` itself and passing everything else to ``app``."""

    def __init__(self, app: ASGIApp, signed: SignedUrlSettings, recordings_dir: Path) -> None:
        self.app = app
        self.signed = signed
        self.recordings_dir = recordings_dir

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(MEDIA_PREFIX):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            if request.method not in _METHODS:
                response: Response = Response(status_code=405, headers={"Allow": "GET, HEAD"})
            else:
                response = media_response(request, self.signed, self.recordings_dir)
        except CallrecError as exc:
            response = await callrec_error(request, exc)
        await response(scope, receive, send)
