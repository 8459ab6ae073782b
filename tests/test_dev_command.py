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
