"""Serving a recording that lives in S3/R2: a redirect to a presigned URL, the object
streamed through the app, or the local cached copy pinned against eviction."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from calls.errors import Unavailable
from ingest.fileserve import (
    DEFAULT_CHUNK_SIZE,
    content_disposition,
    select_range,
    serve_stored_file,
)
from storage import StoredRecording
from storage.cache import Pin
from storage.s3 import S3Store

if TYPE_CHECKING:
    from botocore.response import StreamingBody

log = logging.getLogger(__name__)


class PinnedResponse(Response):
    """Sends ``inner`` while holding ``pin``, so the cached file is not evicted mid-body."""

    def __init__(self, inner: Response, pin: Pin) -> None:
        self.inner = inner
        self.pin = pin
        self.status_code = inner.status_code
        self.raw_headers = inner.raw_headers
        self.background = None
        self.body = b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.inner(scope, receive, send)
        finally:
            self.pin.release()


async def serve_cached(
    request: Request, store: S3Store, stored: StoredRecording, *, filename: str | None
) -> Response | None:
    """The local copy, pinned for the response; None when it was evicted meanwhile."""
    assert stored.path is not None
    pin = await store.cache.pin(stored.call_sid)
    if pin is None:
        return None
    inner = serve_stored_file(request, stored, filename=filename)
    return PinnedResponse(inner, pin)


async def redirect(store: S3Store, stored: StoredRecording, *, filename: str | None) -> Response:
    disposition = content_disposition(filename) if filename else None
    url = await store.presigned_get(stored.call_sid, disposition=disposition)
    # The URL expires in minutes: nobody may keep the redirect longer than that.
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})


async def proxy(
    request: Request, store: S3Store, stored: StoredRecording, *, filename: str | None
) -> Response:
    # Conditionals and the Range are decided against the HEAD just made, exactly as for a
    # local file; S3 then gets the one normalised range to send.
    selected = select_range(request, size=stored.size, etag=stored.etag, last_modified=stored.mtime)
    if isinstance(selected, Response):
        return selected
    s3_range = None if selected is None else f"bytes={selected.start}-{selected.end}"
    if request.method == "HEAD":
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Length": str(stored.size if selected is None else selected.length),
            "ETag": stored.etag,
            "Last-Modified": formatdate(stored.mtime, usegmt=True),
        }
        if selected is not None:
            headers["Content-Range"] = selected.content_range(stored.size)
        if filename:
            headers["Content-Disposition"] = content_disposition(filename)
        return Response(
            status_code=206 if selected else 200, headers=headers, media_type="audio/mpeg"
        )
    answer = await store.get_range(stored.call_sid, s3_range)
    if answer.body is None:
        return Response(status_code=answer.status, headers=answer.headers)
    if filename:
        answer.headers["Content-Disposition"] = content_disposition(filename)
    return StreamingResponse(
        _stream(store, answer.body, int(answer.headers["Content-Length"])),
        status_code=answer.status,
        headers=answer.headers,
        media_type="audio/mpeg",
    )


async def _stream(store: S3Store, body: StreamingBody, length: int) -> AsyncIterator[bytes]:
    # Headers are out once the first chunk is sent; a failure after that can only cut
    # the body short, which the client sees against Content-Length.
    remaining = length
    try:
        while remaining > 0:
            chunk = await store.read_chunk(body, min(DEFAULT_CHUNK_SIZE, remaining))
            if not chunk:
                log.warning("S3 body ended early remaining=%d", remaining)
                return
            remaining -= len(chunk)
            yield chunk
    finally:
        body.close()


async def serve_object(
    request: Request, store: S3Store, stored: StoredRecording, *, via: str, filename: str | None
) -> Response:
    if stored.path is not None:
        cached = await serve_cached(request, store, stored, filename=filename)
        if cached is not None:
            return cached
        head = await store.head(stored.call_sid)
        if head is None:
            raise Unavailable("the recording is being moved; retry shortly", retry_after_s=1)
        stored = head
    if via == "redirect":
        return await redirect(store, stored, filename=filename)
    return await proxy(request, store, stored, filename=filename)
