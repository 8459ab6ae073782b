"""``callrec dev``, the README's first command, brings up a working stack on its own:
embedded Redis, the simulator with demo calls, web and worker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from callrec.embedded_redis import free_port
from tests.stack import ROOT, wait_for


def test_callrec_dev_serves_demo_calls_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "CALLREC_JWT_SECRET")
    }
    env["PYTHONPATH"] = str(ROOT)
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "callrec.cli", "dev", "--port", str(port), "--demo-calls", "3"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "callrec is running" in log.read_text() or proc.poll() is not None, "dev")
        text = log.read_text()
        assert proc.poll() is None, text
        match = re.search(rf"http://127\.0\.0\.1:{port}/\?token=(\S+)", text)
        assert match, text
        token = match.group(1)
        base = f"http://127.0.0.1:{port}"
        calls = httpx.get(f"{base}/api/calls", params={"token": token}).json()["calls"]
        assert len(calls) == 3
        sid = calls[0]["call_sid"]

        def playable() -> bool:
            r = httpx.get(f"{base}/api/calls/{sid}/recording", params={"token": token})
            return r.status_code == 200 and r.content.startswith(b"ID3")

        wait_for(playable, "a demo recording to play")
        assert list((tmp_path / ".callrec-dev" / "recordings").glob("CA*.mp3"))
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()


def test_procfile_runs_what_the_contract_names() -> None:
    lines = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert lines == {
        "web": "uvicorn ingest.app:app --host 0.0.0.0 --port ${PORT:-8000}",
        "worker": "python -m consumers",
    }


def test_a_missing_required_variable_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "TWILIO_"))}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "consumers"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "callrec worker: missing required environment variable REDIS_URL"
    ]
