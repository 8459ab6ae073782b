"""Ending never-ending responses when the web process is asked to stop.

uvicorn's graceful shutdown waits for every open response to finish, and an
``/api/events`` stream never does: one open browser tab would keep a stopping web
process alive until it is killed. So at start-up the app chains its own handler in
front of uvicorn's for SIGTERM and SIGINT; it sets :attr:`Stopping.event`, the event
streams end (their clients reconnect elsewhere with ``Last-Event-ID`` and miss
nothing), and uvicorn's shutdown proceeds as before.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class Stopping:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    def install(self) -> None:
        """Chain in front of the current handlers; call from the running event loop."""
        # Signal handlers can only be set from the main thread (not under a test client).
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            signal.signal(sig, self._chained(loop, signal.getsignal(sig)))

    def _chained(
        self, loop: asyncio.AbstractEventLoop, previous: _Handler
    ) -> Callable[[int, FrameType | None], None]:
        def handler(signum: int, frame: FrameType | None) -> None:
            # A signal handler may interrupt the loop anywhere: hand over through the
            # loop's thread-safe wake-up, never by touching the event directly.
            loop.call_soon_threadsafe(self.event.set)
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        return handler
