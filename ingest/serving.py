"""How stored bytes leave the web process: streamed by the app, or handed to nginx."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ingest.fileserve import serve_file
from ingest.state import AppState
from storage import StoredRecording

X_ACCEL_LOCATION = "/_recordings/"


async def serve_stored(
    request: Request, state: AppState, stored: StoredRecording, *, filename: str | None
) -> Response:
    if stored.path is None:
        raise NotImplementedError("object storage serving arrives with the S3 backend")
    if state.settings.serve_via == "x-accel":
        # nginx does Range, ETag and sendfile itself; the app has done the tenant check.
        headers = {"X-Accel-Redirect": f"{X_ACCEL_LOCATION}{stored.path.name}"}
        if filename:
            headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        return Response(status_code=200, headers=headers, media_type="audio/mpeg")
    return serve_file(
        request,
        stored.path,
        size=stored.size,
        etag=stored.etag,
        last_modified=stored.mtime,
        filename=filename,
    )
