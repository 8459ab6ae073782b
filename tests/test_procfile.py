"""The repository's Procfile as a PaaS runs it: ``honcho start`` (the Python Procfile
runner) starts its web and two workers against the test Redis and the Twilio
simulator, and a recording plays end to end through them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import redis

from callrec.embedded_redis import free_port
from calls import keys
from tests import readiness
from tests.helpers import play_until_stored, register
from tests.stack import ROOT, Stack, wait_for
from twilio_sim import Simulator, media_bytes

B = "biz1"


def test_honcho_runs_the_procfile_and_a_recording_plays(
    stack: Stack, sim: Simulator, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    web = f"http://127.0.0.1:{port}"
    venv_bin = str(Path(sys.executable).parent)
    # As on a PaaS: the virtualenv first on PATH, PORT given by the runner (-p).
    env = stack.env(PUBLIC_BASE_URL=web, PATH=f"{venv_bin}{os.pathsep}{os.environ['PATH']}")
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    log_path = tmp_path / "honcho.log"
    with log_path.open("wb") as out:
        honcho = subprocess.Popen(
            [
                sys.executable, "-m", "honcho", "start",
                "-f", str(ROOT / "Procfile"), "-d", str(ROOT), "-e", str(empty_env_file),
                "-p", str(port), "-c", "web=1,worker=2", "--no-colour",
            ],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    try:

        def up() -> bool:
            if honcho.poll() is not None:
                raise AssertionError(f"honcho exited:\n{log_path.read_text()}")
            try:
                healthy = httpx.get(f"{web}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
            return healthy and len(readiness.group_consumers(client).get(keys.EVENTS, ())) == 2

        wait_for(up, "honcho's web to answer and its two workers to join", 60)
        rec = register(sim, web, B, 1)  # the recording webhook prefetches it
        answer = play_until_stored(web, B, rec.call_sid)
        assert answer.content == media_bytes(rec)
        assert sim.media_requests(rec.recording_sid) == 1
    finally:
        client.close()
        honcho.send_signal(signal.SIGTERM)
        code = honcho.wait(timeout=60)
    log = log_path.read_text()
    # honcho names each process of the Procfile, and all of them stopped on SIGTERM.
    for name in ("web.1", "worker.1", "worker.2"):
        assert f"{name} started" in log.replace("  ", " "), log
    assert code in (0, 143, -signal.SIGTERM), (code, log)
    # Each worker drained on honcho's SIGTERM (its own exit status, before the shell's).
    assert log.count("stopped exit_code=0 handed_back=0") == 2, log
