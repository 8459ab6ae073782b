"""ingest.fileserve against a real temp file: over HTTP (httpx ASGITransport) and raw ASGI."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from ingest import fileserve
from ingest.fileserve import FileRegionResponse, serve_file
from ingest.ranges import ByteRange

SIZE = 10_000
BIG = 3 * 1024 * 1024 + 17  # not a multiple of the chunk size


def pattern(n: int) -> bytes:
    # Position-dependent bytes so an off-by-one or misplaced chunk changes the content.
    return bytes((i * 7 + i // 251) % 256 for i in range(n))


@dataclass
class Served:
    path: Path
    data: bytes
    etag: str
    mtime: float


def make_file(tmp_path: Path, name: str, data: bytes) -> Served:
    path = tmp_path / name
    path.write_bytes(data)
    st = path.stat()
    return Served(path, data, f'"{st.st_size:x}-{st.st_mtime_ns:x}"', st.st_mtime)


@pytest.fixture
def small(tmp_path: Path) -> Served:
    return make_file(tmp_path, "small.mp3", pattern(SIZE))


@pytest.fixture
def big(tmp_path: Path) -> Served:
    return make_file(tmp_path, "big.mp3", os.urandom(BIG))


def app_for(*files: Served) -> Starlette:
    by_name = {f.path.name: f for f in files}

    async def play(request: Request) -> Response:
        f = by_name[request.path_params["name"]]
        return serve_file(request, f.path, size=len(f.data), etag=f.etag, last_modified=f.mtime)

    async def download(request: Request) -> Response:
        f = by_name[request.path_params["name"]]
        return serve_file(
            request,
            f.path,
            size=len(f.data),
            etag=f.etag,
            last_modified=f.mtime,
            filename=f.path.name,
        )

    return Starlette(
        routes=[
            Route("/play/{name}", play, methods=["GET", "HEAD"]),
            Route("/download/{name}", download, methods=["GET"]),
        ]
    )


@pytest.fixture
async def client(small: Served, big: Served) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_for(small, big))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def assert_common_headers(r: httpx.Response, f: Served) -> None:
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"] == f.etag
    assert r.headers["last-modified"] == formatdate(f.mtime, usegmt=True)
    assert r.headers["content-type"] == "audio/mpeg"


async def test_full_200(client: httpx.AsyncClient, small: Served) -> None:
    r = await client.get("/play/small.mp3")
    assert r.status_code == 200
    assert r.content == small.data
    assert r.headers["content-length"] == str(SIZE)
    assert "content-range" not in r.headers
    assert "content-disposition" not in r.headers
    assert_common_headers(r, small)


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, SIZE - 1),
        ("bytes=-500", SIZE - 500, SIZE - 1),
        ("bytes=9990-20000", 9990, SIZE - 1),
        ("bytes=-20000", 0, SIZE - 1),
    ],
)
async def test_206(
    client: httpx.AsyncClient, small: Served, range_header: str, start: int, end: int
) -> None:
    r = await client.get("/play/small.mp3", headers={"Range": range_header})
    assert r.status_code == 206
    assert r.content == small.data[start : end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert r.headers["content-length"] == str(end - start + 1)
    assert_common_headers(r, small)


async def test_416(client: httpx.AsyncClient, small: Served) -> None:
    r = await client.get("/play/small.mp3", headers={"Range": f"bytes={SIZE}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{SIZE}"
    assert r.content == b""


async def test_ignored_range_headers_give_full_200(
    client: httpx.AsyncClient, small: Served
) -> None:
    for header in ("bytes=0-1,5-6", "items=0-9", "bytes=oops"):
        r = await client.get("/play/small.mp3", headers={"Range": header})
        assert r.status_code == 200, header
        assert r.content == small.data


async def test_head(client: httpx.AsyncClient, small: Served) -> None:
    r = await client.head("/play/small.mp3")
    assert r.status_code == 200
    assert r.headers["content-length"] == str(SIZE)
    assert r.content == b""
    assert_common_headers(r, small)


async def test_head_with_range_mirrors_get(client: httpx.AsyncClient) -> None:
    r = await client.head("/play/small.mp3", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206
    assert r.headers["content-length"] == "100"
    assert r.headers["content-range"] == f"bytes 0-99/{SIZE}"
    assert r.content == b""


async def test_head_reads_no_file(tmp_path: Path, small: Served) -> None:
    small.path.unlink()  # any read would fail: HEAD must answer from the caller's stat
    transport = httpx.ASGITransport(app=app_for(small))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.head("/play/small.mp3")
    assert r.status_code == 200
    assert r.headers["content-length"] == str(SIZE)


@pytest.mark.parametrize(
    "inm", ["{etag}", "W/{etag}", '"nope", {etag}', "*"], ids=["exact", "weak", "list", "star"]
)
async def test_if_none_match_304(client: httpx.AsyncClient, small: Served, inm: str) -> None:
    r = await client.get("/play/small.mp3", headers={"If-None-Match": inm.format(etag=small.etag)})
    assert r.status_code == 304
    assert r.headers["etag"] == small.etag
    assert r.content == b""


async def test_if_none_match_other_etag_200(client: httpx.AsyncClient, small: Served) -> None:
    r = await client.get("/play/small.mp3", headers={"If-None-Match": '"other"'})
    assert r.status_code == 200
    assert r.content == small.data


async def test_if_modified_since(client: httpx.AsyncClient, small: Served) -> None:
    same = formatdate(small.mtime, usegmt=True)
    older = formatdate(small.mtime - 3600, usegmt=True)
    r = await client.get("/play/small.mp3", headers={"If-Modified-Since": same})
    assert r.status_code == 304
    r = await client.get("/play/small.mp3", headers={"If-Modified-Since": older})
    assert r.status_code == 200
    # If-None-Match takes precedence: a non-matching tag means 200 whatever the date says.
    r = await client.get(
        "/play/small.mp3", headers={"If-Modified-Since": same, "If-None-Match": '"other"'}
    )
    assert r.status_code == 200


async def test_if_range_mismatch_gives_full_200(client: httpx.AsyncClient, small: Served) -> None:
    for if_range in ('"stale"', f"W/{small.etag}", formatdate(small.mtime - 60, usegmt=True)):
        r = await client.get(
            "/play/small.mp3", headers={"Range": "bytes=0-99", "If-Range": if_range}
        )
        assert r.status_code == 200, if_range
        assert r.content == small.data


async def test_if_range_match_gives_206(client: httpx.AsyncClient, small: Served) -> None:
    for if_range in (small.etag, formatdate(small.mtime, usegmt=True)):
        r = await client.get(
            "/play/small.mp3", headers={"Range": "bytes=0-99", "If-Range": if_range}
        )
        assert r.status_code == 206, if_range
        assert r.content == small.data[:100]


async def test_content_disposition(client: httpx.AsyncClient, small: Served) -> None:
    r = await client.get("/download/small.mp3")
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="small.mp3"'
    assert r.content == small.data


async def test_big_file_full(client: httpx.AsyncClient, big: Served) -> None:
    r = await client.get("/play/big.mp3")
    assert r.status_code == 200
    assert r.headers["content-length"] == str(BIG)
    assert r.content == big.data


async def test_big_range_across_chunks(client: httpx.AsyncClient, big: Served) -> None:
    start, end = 12_345, 2_999_999
    r = await client.get("/play/big.mp3", headers={"Range": f"bytes={start}-{end}"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end}/{BIG}"
    assert r.content == big.data[start : end + 1]


# Raw ASGI: what happens below HTTP when the client goes away or the file changes.

CHUNK = 64 * 1024


def scope(spec_version: str = "2.3") -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}}


def region(f: Served, byte_range: ByteRange | None = None) -> FileRegionResponse:
    return FileRegionResponse(
        f.path,
        size=len(f.data),
        etag=f.etag,
        last_modified=f.mtime,
        byte_range=byte_range,
        chunk_size=CHUNK,
    )


class Recorder:
    def __init__(self, on_body: Callable[[int], None] | None = None) -> None:
        self.messages: list[Message] = []
        self.on_body = on_body

    async def send(self, message: Message) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body" and self.on_body is not None:
            self.on_body(len(self.bodies()))

        self._requested = False

    async def receive(self) -> Message:
        # Like a server: the request body once, then nothing until the client goes away.
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    def status(self) -> int:
        assert self.messages[0]["type"] == "http.response.start"
        return int(self.messages[0]["status"])

    def bodies(self) -> list[Message]:
        return [m for m in self.messages if m["type"] == "http.response.body"]

    def body(self) -> bytes:
        return b"".join(m["body"] for m in self.bodies())

    def completed(self) -> bool:
        return any(not m.get("more_body", False) for m in self.bodies())


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every file the responses open, to check none is left open."""
    files: list[Any] = []

    class Tracked(fileserve._OpenFile):
        def __init__(self, fd: int) -> None:
            super().__init__(fd)
            files.append(self)

    monkeypatch.setattr(fileserve, "_OpenFile", Tracked)
    return files


async def test_range_response_streams_in_bounded_chunks(big: Served, opened: list[Any]) -> None:
    rec = Recorder()
    await region(big, ByteRange(1, BIG - 2))(scope(), rec.receive, rec.send)
    assert rec.status() == 206
    assert rec.body() == big.data[1 : BIG - 1]
    assert max(len(m["body"]) for m in rec.bodies()) <= CHUNK
    assert rec.completed()
    assert len(opened) == 1 and opened[0].closed


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def evict_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # only clean pages can be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture
def thread_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every function the responses run in a worker thread."""
    hops: list[str] = []
    real = anyio.to_thread.run_sync

    async def counted(func: Callable[..., Any], *args: Any) -> Any:
        hops.append(func.__name__)
        return await real(func, *args)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    return hops


async def test_small_cached_range_needs_no_thread(
    small: Served, opened: list[Any], thread_hops: list[str]
) -> None:
    small.path.read_bytes()  # in the page cache, as a file just written or served is
    before = open_fds()
    rec = Recorder()
    await region(small, ByteRange(10, 109))(scope(), rec.receive, rec.send)
    assert [m["body"] for m in rec.bodies()] == [small.data[10:110]]
    assert rec.completed()
    assert thread_hops == []
    assert open_fds() == before


async def test_small_uncached_range_is_one_thread_read(
    small: Served, opened: list[Any], thread_hops: list[str]
) -> None:
    evict_from_page_cache(small.path)
    rec = Recorder()
    await region(small, ByteRange(10, 109))(scope(), rec.receive, rec.send)
    assert [m["body"] for m in rec.bodies()] == [small.data[10:110]]
    assert rec.completed()
    assert thread_hops == ["_open_and_read"]
    assert len(opened) == 1 and opened[0].closed


async def test_disconnect_stops_reading(big: Served, opened: list[Any]) -> None:
    first_body_sent = anyio.Event()
    rec = Recorder(on_body=lambda n: first_body_sent.set())
    calls = 0

    async def receive() -> Message:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await first_body_sent.wait()
        return {"type": "http.disconnect"}

    await region(big)(scope(), receive, rec.send)
    assert rec.status() == 200
    assert len(rec.body()) < BIG // 2
    assert not rec.completed()
    assert len(opened) == 1 and opened[0].closed


async def test_send_error_on_asgi_2_4_stops_quietly(big: Served, opened: list[Any]) -> None:
    rec = Recorder()

    async def send(message: Message) -> None:
        await rec.send(message)
        if len(rec.bodies()) == 2:
            raise OSError("client went away")

    await region(big)(scope("2.4"), rec.receive, send)
    assert len(rec.bodies()) == 2
    assert len(opened) == 1 and opened[0].closed


async def test_file_shrinking_mid_stream_stops_and_warns(
    big: Served, opened: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    def shrink(bodies_sent: int) -> None:
        if bodies_sent == 1:
            os.truncate(big.path, CHUNK + 1000)

    rec = Recorder(on_body=shrink)
    with caplog.at_level(logging.WARNING, logger="ingest.fileserve"):
        await region(big)(scope(), rec.receive, rec.send)
    assert rec.status() == 200
    assert rec.body() == big.data[:CHUNK]  # never the short tail as if it were complete
    assert not rec.completed()
    assert "FILESERVE_SHORT_READ" in caplog.text
    assert len(opened) == 1 and opened[0].closed


async def test_file_vanished_before_send_is_404(
    small: Served, caplog: pytest.LogCaptureFixture
) -> None:
    small.path.unlink()
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="ingest.fileserve"):
        await region(small)(scope(), rec.receive, rec.send)
    assert rec.status() == 404
    assert "FILESERVE_VANISHED" in caplog.text


async def test_file_replaced_with_other_size_is_503(
    small: Served, caplog: pytest.LogCaptureFixture
) -> None:
    small.path.write_bytes(b"x" * (SIZE + 1))
    before = open_fds()
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="ingest.fileserve"):
        await region(small, ByteRange(0, 9))(scope(), rec.receive, rec.send)
    assert rec.status() == 503
    assert b"x" not in rec.body()
    assert "FILESERVE_CHANGED" in caplog.text
    assert open_fds() == before


def test_content_disposition_escapes_unsafe_names() -> None:
    r = FileRegionResponse(
        Path("/nonexistent"),
        size=1,
        etag='"e"',
        last_modified=0.0,
        byte_range=None,
        filename='a"b\r\nX-Evil: 1.mp3',
    )
    value = r.headers["content-disposition"]
    assert value.startswith("attachment; filename*=utf-8''")
    assert "\r" not in value and "\n" not in value and '"' not in value


async def test_whole_file_goes_by_pathsend_when_the_server_offers_it(small: Served) -> None:
    rec = Recorder()
    offered = {**scope(), "extensions": {fileserve.PATHSEND: {}}}
    await region(small)(offered, rec.receive, rec.send)
    assert rec.status() == 200
    assert rec.messages[1] == {"type": fileserve.PATHSEND, "path": str(small.path)}
    # A range is still read and sent by the app: pathsend sends whole files only.
    ranged = Recorder()
    await region(small, ByteRange(10, 109))(offered, ranged.receive, ranged.send)
    assert ranged.status() == 206 and ranged.body() == small.data[10:110]


async def test_pathsend_of_a_replaced_file_is_503(small: Served) -> None:
    small.path.write_bytes(b"x" * (SIZE + 1))
    rec = Recorder()
    offered = {**scope(), "extensions": {fileserve.PATHSEND: {}}}
    await region(small)(offered, rec.receive, rec.send)
    assert rec.status() == 503
