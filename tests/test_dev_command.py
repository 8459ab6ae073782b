"""``callrec dev``, the README's first command, brings up a working stack on its own:
embedded Redis, the simulator with demo calls, web and worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt

from tests.stack import JWT_SECRET, ROOT, start_dev, wait_for


def test_callrec_dev_serves_demo_calls_and_stops_cleanly(tmp_path: Path) -> None:
    dev = start_dev(tmp_path, "--demo-calls", "3")
    try:
        params = {"token": dev.token}
        calls = httpx.get(f"{dev.base_url}/api/calls", params=params).json()["calls"]
        assert len(calls) == 3
        url = f"{dev.base_url}/api/calls/{calls[0]['call_sid']}/recording"

        def playable() -> bool:
            r = httpx.get(url, params=params)
            return r.status_code == 200 and r.content.startswith(b"ID3")

        wait_for(playable, "a demo recording to play")
        assert list((tmp_path / ".callrec-dev" / "recordings").glob("CA*.mp3"))
        assert "PUBLIC_BASE_URL is unset" not in dev.output()  # dev sets it
        # The second business lives on a Twilio subaccount: its calls, its recordings.
        match = re.search(r"'demo-sub' \(on a Twilio subaccount\): \S+/\?token=(\S+)", dev.output())
        assert match, dev.output()
        sub = {"token": match.group(1)}
        sub_calls = httpx.get(f"{dev.base_url}/api/calls", params=sub).json()["calls"]
        assert len(sub_calls) == 1
        assert not {c["call_sid"] for c in sub_calls} & {c["call_sid"] for c in calls}
        sub_url = f"{dev.base_url}/api/calls/{sub_calls[0]['call_sid']}/recording"
        wait_for(
            lambda: httpx.get(sub_url, params=sub).status_code == 200, "the subaccount's recording"
        )
    finally:
        assert dev.stop() == 0, dev.output()


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


def test_callrec_token_prints_a_token_for_the_business() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CALLREC_JWT_SECRET": JWT_SECRET}
    issued_after = int(time.time())
    done = subprocess.run(
        [sys.executable, "-m", "callrec.cli", "token", "--business", "123", "--ttl", "3600"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    issued_before = int(time.time())
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), JWT_SECRET, algorithms=["HS256"])
    assert claims["business_id"] == "123"
    # --ttl 3600 from whenever it was issued (bounds, however long the command took).
    assert issued_after + 3600 <= claims["exp"] <= issued_before + 3600, claims
    del env["CALLREC_JWT_SECRET"]
    missing = subprocess.run(
        [sys.executable, "-m", "callrec.cli", "token", "--business", "123"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "callrec token: missing required environment variable CALLREC_JWT_SECRET"
    )
