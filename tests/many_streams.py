"""Thousands of open ``/api/events`` streams from one test process: raw sockets on an
event loop of their own (a thread), light enough that the web process, not the test
client, does the work; the test itself stays synchronous and drives the stack with the
usual helpers meanwhile. Each stream keeps the bytes it received; status events are
found in them by their JSON (``_frame`` writes ``"call_sid": ..., "status": ...``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tests.stack import token

T = TypeVar("T")
STATUS = re.compile(rb'"call_sid": "([^"]*)", "status": "([^"]*)"')


@dataclass
class OpenStream:
    business: str
    received: bytearray = field(default_factory=bytearray)  # appended by the loop's thread
    ended: bool = False

    def statuses(self) -> list[tuple[str, str]]:
        """(call_sid, status) of every status event so far, in order."""
        return [(m[1].decode(), m[2].decode()) for m in STATUS.finditer(bytes(self.received))]


class ManyStreams:
    def __init__(self, web: str) -> None:
        parts = urlsplit(web)
        assert parts.hostname and parts.port
        self.host, self.port = parts.hostname, parts.port
        self.streams: list[OpenStream] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._writers: list[asyncio.StreamWriter] = []
        self._readers: list[asyncio.Task[None]] = []

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=600)

    def open(self, business: str, count: int, *, concurrency: int = 50) -> list[int]:
        """Open ``count`` streams for ``business``; the status code of each attempt (the
        200s stay open)."""
        return self._run(self._open_many(business, count, concurrency))

    async def _open_many(self, business: str, count: int, concurrency: int) -> list[int]:
        gate = asyncio.Semaphore(concurrency)
        request = (
            f"GET /api/events HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {token(business)}\r\n\r\n"
        ).encode()

        async def one() -> int:
            async with gate:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                if status != 200:
                    writer.close()
                    return status
                stream = OpenStream(business)
                self.streams.append(stream)
                self._writers.append(writer)
                self._readers.append(asyncio.create_task(self._read(reader, stream)))
                return status

        return list(await asyncio.gather(*(one() for _ in range(count))))

    @staticmethod
    async def _read(reader: asyncio.StreamReader, stream: OpenStream) -> None:
        try:
            while chunk := await reader.read(65536):
                stream.received += chunk
        except OSError:
            pass
        finally:
            stream.ended = True

    def of(self, business: str) -> list[OpenStream]:
        return [s for s in self.streams if s.business == business]

    def close(self) -> None:
        async def shut() -> None:
            for writer in self._writers:
                writer.close()
            for task in self._readers:
                task.cancel()
            await asyncio.gather(*self._readers, return_exceptions=True)
            for writer in self._writers:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        self._run(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
