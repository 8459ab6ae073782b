"""Real callrec processes for tests: ``web`` under uvicorn and ``worker`` as
``python -m consumers``, each a subprocess with its own log file."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from callrec.embedded_redis import free_port
from callrec.processes import stop_processes
from callrec.procfile import web_command, worker_command
from config.settings import load_settings
from ingest.auth import issue_token
from tests import readiness
from tests.clients import sync_redis
from twilio_sim import Simulator

JWT_SECRET = "test-secret-" + "x" * 32
ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def consumer(self) -> str:
        """A worker's consumer name in the group, up to its random part:
        consumers/__main__.py's ``hostname-pid``."""
        return f"{socket.gethostname()}-{self.popen.pid}"


@dataclass
class Stack:
    tmp: Path
    redis_url: str
    twilio_base: str
    account_sid: str
    auth_token: str
    env_overrides: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    web_urls: list[str] = field(default_factory=list)

    @property
    def recordings_dir(self) -> Path:
        return self.tmp / "recordings"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TWILIO_", "CALLREC_", "S3_", "STORAGE", "SERVE_"))
        }
        env.update(
            REDIS_URL=self.redis_url,
            TWILIO_ACCOUNT_SID=self.account_sid,
            TWILIO_AUTH_TOKEN=self.auth_token,
            TWILIO_API_BASE=self.twilio_base,
            CALLREC_JWT_SECRET=JWT_SECRET,
            RECORDINGS_DIR=str(self.recordings_dir),
            DOWNLOAD_BACKOFF_BASE_MS="100",
            RECONCILE_INTERVAL_MS="500",
            PYTHONPATH=str(ROOT),
        )
        env.update(self.env_overrides)
        env.update(extra)
        return env

    @classmethod
    def around(cls, sim: Simulator, *, tmp: Path, redis_url: str, **env_overrides: str) -> Stack:
        """A stack whose processes use ``sim`` as Twilio."""
        return cls(
            tmp=tmp,
            redis_url=redis_url,
            twilio_base=sim.base_url,
            account_sid=sim.account_sid,
            auth_token=sim.auth_token,
            env_overrides=dict(env_overrides),
        )

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        """``args`` as a process of this stack, its output in ``<tmp>/<name>.log``."""
        log_path = self.tmp / f"{name}.log"
        out = log_path.open("wb")
        popen = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        out.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def start_web(self, log_level: str = "warning", **extra: str) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = self.env(**{"PUBLIC_BASE_URL": url, **extra})  # extra may override it
        proc = self.spawn(
            f"web{len(self.web_urls)}",
            # "info" shows uvicorn's access log, as the Procfile's web does.
            web_command(port, log_level=log_level),
            env,
        )

        healthy = readiness.answers(f"{url}/healthz", what="web", alive=proc.alive, logs=proc.log)
        wait_for(healthy, "web to answer /healthz")
        self.web_urls.append(url)
        return url

    def start_worker(self, *, wait: bool = True, **extra: str) -> Proc:
        n = sum(1 for p in self.procs if p.name.startswith("worker"))
        env = self.env(**extra)
        proc = self.spawn(f"worker{n}", worker_command(), env)
        if wait:
            client = sync_redis(self.redis_url, load_settings(env).redis_tls)
            try:
                reading = readiness.joined(
                    client,
                    what=proc.name,
                    alive=proc.alive,
                    logs=proc.log,
                    prefix=f"{proc.consumer}-",
                )
                wait_for(reading, f"{proc.name} to read every event stream")
            finally:
                client.close()
        return proc

    def workers(self) -> list[Proc]:
        return [p for p in self.procs if p.name.startswith("worker")]

    def worker_logs(self) -> str:
        return "".join(p.log() for p in self.workers())

    def stop_workers(self) -> list[int]:
        """SIGTERM every worker and wait for them to exit (their downloads finished or
        handed back): after that their logs are complete. Returns the exit codes."""
        return stop_processes([proc.popen for proc in self.workers()], grace_s=30)

    def stop(self) -> None:
        stop_processes([proc.popen for proc in self.procs], grace_s=15)


def token(business: str, ttl_s: int = 3600) -> str:
    return issue_token(JWT_SECRET, business, ttl_s)


def auth(business: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(business)}"}


@dataclass
class DevRun:
    """A running ``callrec dev`` and what it printed on start."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    base_url: str
    token: str

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        self.popen.send_signal(signal.SIGINT)
        return self.popen.wait(timeout=60)


def start_dev(cwd: Path, *args: str) -> DevRun:
    """``callrec dev`` as a new user runs it: no Redis, Twilio or S3 settings given."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "TWILIO_", "CALLREC_", "S3_", "STORAGE", "AWS_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    log_path = cwd / "dev.log"
    with log_path.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "callrec.cli", "dev", "--port", str(port), *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for(
        lambda: "callrec is running" in log_path.read_text() or popen.poll() is not None, "dev"
    )
    text = log_path.read_text()
    match = re.search(rf"http://127\.0\.0\.1:{port}/\?token=(\S+)", text)
    if popen.poll() is not None or not match:
        popen.kill()
        raise AssertionError(f"callrec dev did not start:\n{text}")
    return DevRun(popen, log_path, f"http://127.0.0.1:{port}", match.group(1))
