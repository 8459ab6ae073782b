"""``callrec dev --local-s3`` (what ``make dev-s3`` runs): the whole stack with
STORAGE=s3 against a local S3-compatible server, from one command."""

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


def test_callrec_dev_local_s3_stores_in_the_bucket_and_redirects(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "TWILIO_", "CALLREC_", "S3_", "STORAGE", "AWS_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    log = tmp_path / "dev.log"
    command = [sys.executable, "-m", "callrec.cli", "dev", "--local-s3", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--demo-calls", "2"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "callrec is running" in log.read_text() or proc.poll() is not None, "dev")
        text = log.read_text()
        assert proc.poll() is None, text
        s3_url = re.search(r"local S3 \(moto, in memory\): (http://127\.0\.0\.1:\d+) ", text)
        token = re.search(rf"http://127\.0\.0\.1:{port}/\?token=(\S+)", text)
        assert s3_url and token, text
        base = f"http://127.0.0.1:{port}"
        params = {"token": token.group(1)}
        sid = httpx.get(f"{base}/api/calls", params=params).json()["calls"][0]["call_sid"]
        url = f"{base}/api/calls/{sid}/recording"
        cached = tmp_path / ".callrec-dev" / "s3-cache" / f"{sid}.mp3"

        def stored() -> bool:
            return httpx.get(url, params=params).status_code == 200

        wait_for(stored, "a demo recording to be stored")  # the local cache hit
        body = cached.read_bytes()
        assert body.startswith(b"ID3")
        cached.unlink()  # now only the bucket has it: the web redirects there
        r = httpx.get(url, params=params)
        assert r.status_code == 302
        assert r.headers["location"].startswith(f"{s3_url.group(1)}/callrec-dev/{sid}.mp3?")
        assert httpx.get(r.headers["location"]).content == body
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()
