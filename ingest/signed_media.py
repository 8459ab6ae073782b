"""``GET|HEAD /media/<file>?expires=&md5=``: the signed media URL plays redirect to with
``SERVE_VIA=signed``, served by the app when no nginx is in front.

The URL itself is the authorisation (``ingest/signed_urls.py``): no JWT, no tenant lookup,
no Redis, so this route keeps serving while Redis is down. Range, conditionals and the
body are ``ingest/fileserve.py``'s, as for every other local file.
"""

from __future__ import annotations

import os
import time

from starlette.requests import Request
from starlette.responses import Response

from calls.errors import Forbidden, NotFound
from ingest.fileserve import serve_file
from ingest.signed_urls import verify
from ingest.state import app_state
from storage.base import make_etag


async def media(request: Request) -> Response:
    settings = app_state(request).settings
    signed = settings.signed_urls
    if signed is None:
        raise NotFound("signed media URLs are off (SERVE_VIA is not signed)")
    query = request.query_params
    filename = query.get("filename")
    verdict = verify(
        signed.secret,
        path=request.url.path,
        expires=query.get("expires"),
        md5=query.get("md5"),
        filename=filename,
        now_s=time.time(),
    )
    if verdict.name is None:
        raise Forbidden(f"signed media URL refused: {verdict.reason}")
    # The name is a strict SID pattern with no separator: it cannot leave the directory.
    path = settings.recordings_dir / verdict.name
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
