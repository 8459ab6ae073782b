"""A loopback TCP proxy in front of Redis that counts the commands clients send (RESP
arrays, pipelined or not). INFO commandstats and CLIENT LIST also count what Lua scripts
run inside Redis; this counts only what callrec's processes ask for, i.e. round-trip work."""

from __future__ import annotations

import asyncio
import threading

from callrec.embedded_redis import free_port


class _RespCounter:
    """Counts top-level request arrays in a client->server byte stream."""

    def __init__(self) -> None:
        self.buf = b""
        self.bulk_left = 0  # bulk strings still expected in the current array
        self.commands = 0

    def feed(self, data: bytes) -> None:
        self.buf += data
        pos = 0
        while True:
            if self.bulk_left == 0:
                end = self.buf.find(b"\r\n", pos)
                if end < 0:
                    break
                header = self.buf[pos:end]
                if header.startswith(b"*"):
                    self.commands += 1
                    self.bulk_left = int(header[1:])
                # (inline commands are one line each)
                elif header:
                    self.commands += 1
                pos = end + 2
                continue
            end = self.buf.find(b"\r\n", pos)
            if end < 0:
                break
            length = int(self.buf[pos + 1 : end])
            if len(self.buf) < end + 2 + length + 2:
                break
            pos = end + 2 + length + 2
            self.bulk_left -= 1
        self.buf = self.buf[pos:]


class CountingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._counters: list[_RespCounter] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="countproxy")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def commands(self) -> int:
        return sum(c.commands for c in self._counters)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        counter = _RespCounter()
        self._counters.append(counter)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await src.read(65536):
                    if count:
                        counter.feed(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
