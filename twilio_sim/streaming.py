"""Sending a recording body the way a slow or flaky media server would."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from starlette.types import Receive, Send

from twilio_sim.models import Fault, SimRecording, media_chunks
from twilio_sim.state import MediaSettings, SimState, Slot

logger = logging.getLogger(__name__)


class CutOff(Exception):
    """Raised after a partial body: uvicorn then closes the socket mid-response, as asked."""


class CutOffLogFilter(logging.Filter):
    # uvicorn logs every escaping exception with a traceback; a scripted cut-off is not news.
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], CutOff))


class ActiveResponses:
    """The media responses in progress, so stopping the simulator can cut them off at once.

    Otherwise uvicorn's graceful shutdown waits for a stalled body, then cancels it and logs
    the cancellation as an application error. Only touched from the servers' event loop.
    """

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()
        self.aborting = False

    def abort_all(self) -> None:
        self.aborting = True
        for scope in list(self._scopes):
            scope.cancel()

    async def run(self, receive: Receive, work: Callable[[], Awaitable[bool]]) -> bool:
        """Run `work`, abandoning it the moment the client goes away or the server stops.

        Without the disconnect watch a stalled or slow response would hold its in-flight slot
        until its next write, long after the client gave up, inflating the concurrency counts.
        Returns True when the connection must be dropped: work asked for a cut-off, or the
        simulator is stopping.
        """
        if self.aborting:
            return True
        result = False
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            self._scopes.add(tg.cancel_scope)
            try:
                tg.start_soon(watch)
                result = await work()
            except OSError:
                logger.debug("client went away mid-response")
            finally:
                self._scopes.discard(tg.cancel_scope)
                tg.cancel_scope.cancel()
        return result or self.aborting


async def send_media(
    send: Send,
    rec: SimRecording,
    settings: MediaSettings,
    fault: Fault | None,
    state: SimState,
    slot: Slot,
) -> bool:
    """Stream the body; returns True when a cut-off fault wants the connection dropped."""
    size = rec.size_bytes
    cut = fault is not None and fault.kind == "cut_off" and fault.after_bytes < size
    limit = fault.after_bytes if cut and fault is not None else size
    state.download_started(rec)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"audio/mpeg"),
                (b"content-length", str(size).encode()),
            ],
        }
    )
    if fault is not None and fault.kind == "stall":
        await anyio.sleep(fault.seconds)
    chunks = media_chunks(rec, max(settings.chunk_size, 1))
    pos = 0
    while True:
        if pos and settings.chunk_delay_s:
            await anyio.sleep(settings.chunk_delay_s)
        piece = next(chunks, b"")[: limit - pos]
        end = pos + len(piece)
        last = end == size
        if last:
            slot.release()
        if end > pos or last:
            await send({"type": "http.response.body", "body": piece, "more_body": not last})
        if last:
            state.download_completed(rec)
        pos = end
        if pos >= limit:
            return cut
