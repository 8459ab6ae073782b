"""How stored bytes leave the web process: streamed by the app, handed to nginx
(X-Accel-Redirect), redirected to a signed media URL, or (with S3/R2) redirected to a
presigned URL or proxied from the bucket."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ingest.fileserve import serve_stored_file
from ingest.signed_urls import signed_path
from ingest.state import AppState
from storage import StoredRecording

X_ACCEL_LOCATION = "/_recordings/"


async def serve_stored(
    request: Request, state: AppState, stored: StoredRecording, *, filename: str | None
) -> Response:
    settings = state.settings
    # With S3, a local file is only a cache that another host may not have: SERVE_S3_VIA
    # decides, except for x-accel, where nginx on this host serves this host's copy.
    if settings.s3 is not None and (stored.path is None or settings.serve_via != "x-accel"):
        from ingest.objectserve import serve_object
        from storage.s3 import S3Store

        assert isinstance(state.store, S3Store)
        return await serve_object(
            request, state.store, stored, via=settings.s3.serve_via, filename=filename
        )
    assert stored.path is not None
    if settings.serve_via == "x-accel":
        # nginx does Range, ETag and sendfile itself; the app has done the tenant check.
        headers = {"X-Accel-Redirect": f"{X_ACCEL_LOCATION}{stored.path.name}"}
        if filename:
            headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        return Response(status_code=200, headers=headers, media_type="audio/mpeg")
    if settings.signed_urls is not None:
        expires = int(time.time()) + settings.signed_urls.ttl_s
        location = signed_path(
            settings.signed_urls.secret,
            name=stored.path.name,
            expires=expires,
            filename=filename or "",
        )
        # 302 as for S3 presigned URLs; never cached, the target expires.
        return RedirectResponse(location, status_code=302, headers={"Cache-Control": "no-store"})
    return serve_stored_file(request, stored, filename=filename)
