"""A small Server-Sent Events reader for tests: reads a real stream in a thread."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str
    data: str

    def json(self) -> dict[str, object]:
        value = json.loads(self.data)
        assert isinstance(value, dict)
        return value


@dataclass
class SseReader:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    events: list[SseEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    status: int | None = None

    def __post_init__(self) -> None:
        self.opened = threading.Event()
        self.ended = threading.Event()
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.opened.wait(15), f"no answer from {self.url}"

    def _run(self) -> None:
        client = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
        try:
            with client.stream("GET", self.url, headers=self.headers) as response:
                stream = response.extensions.get("network_stream")
                self._socket = stream.get_extra_info("socket") if stream else None
                self.status = response.status_code
                self.opened.set()
                self._read(response)
        except httpx.HTTPError:
            pass
        finally:
            client.close()
            self.opened.set()
            self.ended.set()

    def _read(self, response: httpx.Response) -> None:
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if not line:
                if "data" in fields:
                    event = fields.get("event", "message")
                    self.events.append(SseEvent(fields.get("id"), event, fields["data"]))
                fields = {}
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")

    def statuses(self) -> list[SseEvent]:
        return [e for e in list(self.events) if e.event == "status"]

    def by_sid(self) -> dict[str, list[tuple[object, object]]]:
        out: dict[str, list[tuple[object, object]]] = {}
        for e in self.statuses():
            d = e.json()
            out.setdefault(str(d["call_sid"]), []).append((d["status"], d["position"]))
        return out

    def close(self) -> None:
        # shutdown() (unlike close()) wakes the thread blocked reading; it then closes
        # its own connection and client.
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=30)
        assert self.ended.is_set()
