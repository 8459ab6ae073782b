"""Serving a local file, or one byte range of it, with validators and conditional requests.

Written for seekable audio playback: one ``Range`` per request, ETag/Last-Modified so players
and caches can revalidate, and a body streamed with bounded memory. File I/O never runs on
the event loop, with one exception that pays: a response that fits in one chunk (the usual
player probe or seek) whose bytes are all in the page cache is read on the loop with
``preadv2(RWF_NOWAIT)``, which returns at once instead of waiting for a disk; if any byte
is not cached it costs exactly one thread hop, as every other read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from email.utils import formatdate, parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ingest.ranges import ByteRange, RangeNotSatisfiable, parse_range
from storage.base import StoredRecording

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FileRegionResponse",
    "content_disposition",
    "select_range",
    "serve_file",
]

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 256 * 1024
# The ASGI extension a server offers in scope["extensions"] when it sends files itself.
PATHSEND = "http.response.pathsend"


class _FileChanged(Exception):
    """The file on disk no longer has the size the response headers were computed from."""

    def __init__(self, actual_size: int) -> None:
        super().__init__(actual_size)
        self.actual_size = actual_size


class _OpenFile:
    """A read-only fd whose close is tracked, so the error path never closes it twice.

    A double close is not harmless: the number may already belong to another thread's file.
    """

    __slots__ = ("closed", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)

    def pread(self, count: int, offset: int, close: bool) -> bytes:
        # Runs in a worker thread; closing in the same hop as the last read saves one hop.
        try:
            return os.pread(self.fd, count, offset)
        finally:
            if close:
                self.close()


def _open_and_read(
    path: Path, expected_size: int, count: int, offset: int, close: bool
) -> tuple[_OpenFile, bytes]:
    # One thread hop for open + fstat + first read (+ close when that is the whole body).
    f = _OpenFile(os.open(path, os.O_RDONLY))
    try:
        actual = os.fstat(f.fd).st_size
        if actual != expected_size:
            # Replaced or truncated since the caller's stat: Content-Length/ETag would lie.
            raise _FileChanged(actual)
        return f, f.pread(count, offset, close)
    except BaseException:
        f.close()
        raise


# preadv2's "fail rather than wait for the disk" flag (Linux 4.14+); None elsewhere.
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
_nowait_supported = _RWF_NOWAIT is not None


def _read_cached(path: Path, expected_size: int, count: int, offset: int) -> bytes | None:
    """The ``count`` bytes at ``offset`` if every one is in the page cache, read without
    blocking (on the event loop); None when the caller must read them in a thread.

    open and fstat of a file that was just served or written touch only cached metadata.
    Raises FileNotFoundError and _FileChanged as ``_open_and_read`` does."""
    global _nowait_supported
    if not _nowait_supported or _RWF_NOWAIT is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        actual = os.fstat(fd).st_size
        if actual != expected_size:
            raise _FileChanged(actual)
        buf = bytearray(count)
        try:
            got = os.preadv(fd, [buf], offset, _RWF_NOWAIT)
        except BlockingIOError:
            return None  # some of it is on disk only
        except OSError:
            _nowait_supported = False  # this filesystem refuses the flag: stop trying
            return None
        # A short read is a partly cached range (or a file shrinking): the thread path
        # reads it plainly and tells the two apart.
        return bytes(buf) if got == count else None
    finally:
        os.close(fd)


@lru_cache(maxsize=16)
def _send_raises_on_disconnect(spec_version: str) -> bool:
    # ASGI 2.4 servers raise OSError from send() once the client is gone; older ones (uvicorn
    # says 2.3) silently drop the message, so we must watch receive() to notice a disconnect.
    try:
        return tuple(int(p) for p in spec_version.split(".")) >= (2, 4)
    except ValueError:
        return False


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def content_disposition(filename: str) -> str:
    if (
        filename.isascii()
        and filename.isprintable()
        and '"' not in filename
        and "\\" not in filename
    ):
        return f'attachment; filename="{filename}"'
    # Anything else would need escaping or break the header (CR/LF injection): RFC 6266 form.
    return f"attachment; filename*=utf-8''{quote(filename, safe='')}"


class FileRegionResponse(Response):
    """200 with a whole file, or 206 with ``byte_range`` of it; HEAD sends headers only.

    ``size``, ``etag`` and ``last_modified`` come from the caller's stat, so building the
    response touches no file. The file is opened once, when the body is sent; if it vanished
    or changed size by then, the headers would be wrong, so 404/503 is sent instead. Once
    headers are out, a short read (truncation mid-stream) ends the response early and the
    server drops the connection, so the client sees a truncated body rather than wrong data.
    """

    def __init__(
        self,
        path: Path,
        *,
        size: int,
        etag: str,
        last_modified: float,
        byte_range: ByteRange | None,
        media_type: str = "audio/mpeg",
        method: str = "GET",
        filename: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.path = path
        self.size = size
        self.byte_range = byte_range
        self.chunk_size = chunk_size
        self.head_only = method.upper() == "HEAD"
        self.status_code = 206 if byte_range is not None else 200
        self.media_type = media_type
        self.background = None
        self.body = b""
        if byte_range is None:
            self.offset, self.length = 0, size
        else:
            self.offset, self.length = byte_range.start, byte_range.length
        # Built as raw bytes directly: Response.init_headers would add its own
        # Content-Length from the (empty) body.
        raw = [
            (b"accept-ranges", b"bytes"),
            (b"content-length", str(self.length).encode()),
            (b"content-type", media_type.encode("latin-1")),
            (b"etag", etag.encode("latin-1")),
            (b"last-modified", formatdate(last_modified, usegmt=True).encode()),
        ]
        if byte_range is not None:
            raw.append((b"content-range", byte_range.content_range(size).encode()))
        if filename is not None:
            raw.append((b"content-disposition", content_disposition(filename).encode()))
        if extra_headers:
            raw.extend(
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra_headers.items()
            )
        self.raw_headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start_message: Message = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        if self.head_only or self.length == 0:
            await send(start_message)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if self.byte_range is None and PATHSEND in scope.get("extensions", {}):
            await self._pathsend(scope, receive, send, start_message)
            return

        first = min(self.length, self.chunk_size)
        whole = first == self.length
        try:
            cached = _read_cached(self.path, self.size, first, self.offset) if whole else None
            if cached is None:
                f, data = await anyio.to_thread.run_sync(
                    _open_and_read, self.path, self.size, first, self.offset, whole
                )
        except FileNotFoundError:
            logger.warning("FILESERVE_VANISHED path=%s", self.path)
            await Response(status_code=404)(scope, receive, send)
            return
        except _FileChanged as exc:
            logger.warning(
                "FILESERVE_CHANGED path=%s expected_size=%d actual_size=%d",
                self.path,
                self.size,
                exc.actual_size,
            )
            await Response(status_code=503, headers={"Retry-After": "1"})(scope, receive, send)
            return
        if cached is not None:
            try:
                await send(start_message)
                await send({"type": "http.response.body", "body": cached, "more_body": False})
            except OSError:
                pass  # ASGI 2.4's client-gone signal, as below
            return
        if len(data) < first:
            # Truncated between fstat and pread; headers are not out yet, so say so honestly.
            f.close()
            self._log_short_read(self.offset, first, len(data))
            await Response(status_code=503, headers={"Retry-After": "1"})(scope, receive, send)
            return

        try:
            await send(start_message)
            await send({"type": "http.response.body", "body": data, "more_body": not whole})
            if whole:
                return
            del data
            spec = scope.get("asgi", {}).get("spec_version", "2.0")
            if _send_raises_on_disconnect(spec):
                await self._stream_rest(f, send, first)
            else:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                    await self._stream_rest(f, send, first)
                    tg.cancel_scope.cancel()
        except OSError:
            # Only send() gets here (read errors are handled in _stream_rest): ASGI 2.4's
            # client-gone signal. Nothing left to tell anyone.
            return
        finally:
            # Normally closed in the last read's thread hop; this is the error/cancel path,
            # where awaiting a thread is no longer possible. close() of a read-only fd does
            # no I/O worth a hop.
            f.close()

    async def _pathsend(
        self, scope: Scope, receive: Receive, send: Send, start_message: Message
    ) -> None:
        """A whole file through the server's own file sending (granian's
        ``http.response.pathsend``: read and written in Rust, never through Python)."""
        try:
            # The server opens the path itself: check here that the file still has the
            # size the headers promise (a stat of a file just looked up; no I/O worth a hop).
            actual = os.stat(self.path).st_size
        except FileNotFoundError:
            logger.warning("FILESERVE_VANISHED path=%s", self.path)
            await Response(status_code=404)(scope, receive, send)
            return
        if actual != self.size:
            logger.warning(
                "FILESERVE_CHANGED path=%s expected_size=%d actual_size=%d",
                self.path,
                self.size,
                actual,
            )
            await Response(status_code=503, headers={"Retry-After": "1"})(scope, receive, send)
            return
        await send(start_message)
        await send({"type": PATHSEND, "path": str(self.path)})

    async def _stream_rest(self, f: _OpenFile, send: Send, sent: int) -> None:
        remaining = self.length - sent
        offset = self.offset + sent
        while remaining > 0:
            count = min(self.chunk_size, remaining)
            last = count == remaining
            try:
                data = await anyio.to_thread.run_sync(f.pread, count, offset, last)
            except OSError:
                logger.warning(
                    "FILESERVE_READ_ERROR path=%s offset=%d", self.path, offset, exc_info=True
                )
                return
            if len(data) < count:
                # Headers (status, Content-Length) are already sent; stopping without the
                # final message makes the server abort the connection, which the client
                # can detect, instead of passing off a short body as complete.
                self._log_short_read(offset, count, len(data))
                return
            await send({"type": "http.response.body", "body": data, "more_body": not last})
            offset += count
            remaining -= count

    def _log_short_read(self, offset: int, wanted: int, got: int) -> None:
        logger.warning(
            "FILESERVE_SHORT_READ path=%s offset=%d wanted=%d got=%d (file shrank or vanished)",
            self.path,
            offset,
            wanted,
            got,
        )


def _etag_matches_weak(header: str, etag: str) -> bool:
    # If-None-Match uses weak comparison (RFC 9110 §13.1.2): W/ prefixes are ignored.
    if header.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == ours for tag in header.split(","))


def _http_date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _if_range_matches(header: str, etag: str, last_modified: float) -> bool:
    value = header.strip()
    if value.startswith(('"', "W/")):
        # Strong comparison only: a weak tag can't vouch that the bytes are identical.
        return not value.startswith("W/") and not etag.startswith("W/") and value == etag
    when = _http_date(value)
    # Last-Modified goes out with whole seconds, so compare at that resolution.
    return when is not None and int(when) == int(last_modified)


def select_range(
    request: Request, *, size: int, etag: str, last_modified: float
) -> Response | ByteRange | None:
    """Conditionals and Range of a GET/HEAD against a representation's validators.

    A finished answer (304 or 416), else the single range to serve (None: the whole of
    it). Shared by local files and objects proxied from S3, so both answer alike.
    """
    headers = request.headers

    def validators() -> dict[str, str]:
        # Only built for the rare 304/416; FileRegionResponse formats its own.
        return {"ETag": etag, "Last-Modified": formatdate(last_modified, usegmt=True)}

    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if _etag_matches_weak(if_none_match, etag):
            return Response(status_code=304, headers=validators())
    else:
        # If-Modified-Since only counts when If-None-Match is absent (RFC 9110 §13.1.3).
        if_modified_since = headers.get("if-modified-since")
        if if_modified_since is not None:
            since = _http_date(if_modified_since)
            if since is not None and int(last_modified) <= since:
                return Response(status_code=304, headers=validators())

    range_header = headers.get("range")
    if range_header is not None:
        if_range = headers.get("if-range")
        if if_range is not None and not _if_range_matches(if_range, etag, last_modified):
            # The client's partial copy is stale: it needs the whole current file.
            range_header = None
    try:
        return parse_range(range_header, size)
    except RangeNotSatisfiable:
        return Response(
            status_code=416,
            headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes", **validators()},
        )


def serve_file(
    request: Request,
    path: Path,
    *,
    size: int,
    etag: str,
    last_modified: float,
    media_type: str = "audio/mpeg",
    filename: str | None = None,
) -> Response:
    """The response for a GET/HEAD of a stored file: 200, 206, 304 or 416.

    HEAD answers exactly as GET would (including 206 for a Range, as nginx does), minus the
    body. Does no file I/O itself; the returned response opens the file when sent.
    """
    selected = select_range(request, size=size, etag=etag, last_modified=last_modified)
    if isinstance(selected, Response):
        return selected
    return FileRegionResponse(
        path,
        size=size,
        etag=etag,
        last_modified=last_modified,
        byte_range=selected,
        media_type=media_type,
        method=request.method,
        filename=filename,
    )


def serve_stored_file(
    request: Request, stored: StoredRecording, *, filename: str | None
) -> Response:
    """``serve_file`` for a recording with a local copy (``stored.path`` set)."""
    assert stored.path is not None
    return serve_file(
        request,
        stored.path,
        size=stored.size,
        etag=stored.etag,
        last_modified=stored.mtime,
        filename=filename,
    )
