"""Real uvicorn servers on loopback, run by a background thread with its own event loop.

The owning (test) thread stays synchronous and free to block; the servers keep answering.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp

from twilio_sim.streaming import CutOffLogFilter

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 10.0


def _install_log_filter() -> None:
    uvicorn_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, CutOffLogFilter) for f in uvicorn_logger.filters):
        uvicorn_logger.addFilter(CutOffLogFilter())


class ServerThread:
    """Serves each ASGI app on its own 127.0.0.1 ephemeral port (one origin per app)."""

    def __init__(
        self,
        apps: list[ASGIApp],
        *,
        name: str = "twilio-sim",
        before_stop: Callable[[], None] | None = None,
    ) -> None:
        self._servers = [
            uvicorn.Server(
                uvicorn.Config(
                    app,
                    host="127.0.0.1",
                    port=0,
                    lifespan="off",
                    ws="none",
                    # log_config=None: a library must not rewrite the host process's logging.
                    log_config=None,
                    log_level=None,
                    access_log=False,
                    timeout_graceful_shutdown=1,
                )
            )
            for app in apps
        ]
        self._name = name
        self._before_stop = before_stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._ports: list[int] = []

    @property
    def ports(self) -> list[int]:
        if not self._ports:
            raise RuntimeError("server is not running")
        return list(self._ports)

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        _install_log_filter()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT_S):
            self.stop()
            raise RuntimeError("servers did not start in time")
        if self._error is not None:
            self.stop()
            raise RuntimeError("servers failed to start") from self._error

    def stop(self) -> None:
        loop = self._loop
        if self._before_stop is not None and loop is not None and loop.is_running():
            # Runs in the loop thread: the hook may touch loop-bound objects.
            done = threading.Event()

            def hook() -> None:
                try:
                    assert self._before_stop is not None
                    self._before_stop()
                finally:
                    done.set()

            loop.call_soon_threadsafe(hook)
            done.wait(5)
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            if self._thread.is_alive():
                logger.warning("server thread %s did not stop", self._name)
            self._thread = None
        self._ports = []

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        # uvicorn reports a failed bind with sys.exit, which must not vanish with the thread.
        except BaseException as exc:
            self._error = exc
            logger.exception("simulator servers crashed")
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(server.serve()) for server in self._servers]
        while not all(server.started for server in self._servers):
            done = [t for t in tasks if t.done()]
            if done:
                await asyncio.gather(*tasks)
                raise RuntimeError("a server exited during startup")
            await asyncio.sleep(0.01)
        self._ports = [server.servers[0].sockets[0].getsockname()[1] for server in self._servers]
        self._ready.set()
        await asyncio.gather(*tasks)
