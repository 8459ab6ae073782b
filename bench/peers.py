"""The peer queues a team would otherwise pick, run in the same bench on the same workloads
as callrec's: arq (a hand-rolled per-business limiter) and dramatiq (its
``ConcurrentRateLimiter``), each at its best configuration per workload as the peers'
README lists it. Their harness is not copied here: it is read from ``../shared/peers``
(the folder laid beside the repository, as CI has it; ``CALLREC_PEERS_DIR`` overrides) and
runs in its own virtualenv, ``.venv-peers`` (arq needs redis-py < 6, callrec uses 8), which
``bench/install-tools.sh`` makes when the folder is there.

Each peer gets its own Redis (an embedded server, flushed by the harness) and the
harness's own media server (``fake_media.py``); wall time is the harness's: first enqueue
to the last completion, enqueueing one job at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from callrec.embedded_redis import EmbeddedRedis, free_port
from tests.stack import ROOT

PEERS_VENV = ROOT / ".venv-peers"
WORKLOADS = {
    # name: (businesses, jobs per business, media latency s); 64 KiB each, as callrec's
    "A": (100, 20, 0.0),
    "B": (20, 30, 0.2),
}
ORDERS = ("grouped", "interleaved")
# The fastest configuration of each peer per workload and order, from the peers' README
# ("Headline" table: median of 3 runs). Both run with 2 worker processes, as callrec does.
BEST: dict[tuple[str, str], dict[str, list[str]]] = {
    ("A", "grouped"): {
        "arq": ["--variant", "block", "-j", "8", "--poll-delay", "0.02"],
        "dramatiq": ["--variant", "block", "-t", "8"],
    },
    ("A", "interleaved"): {
        "arq": ["--variant", "retry", "-j", "8", "--poll-delay", "0.02"],
        "dramatiq": ["--variant", "retry-fast", "-t", "8"],
    },
    ("B", "grouped"): {
        "arq": ["--variant", "retry", "-j", "32", "--poll-delay", "0.02"],
        "dramatiq": ["--variant", "retry-fast", "-t", "32"],
    },
    ("B", "interleaved"): {
        "arq": ["--variant", "block", "-j", "32", "--poll-delay", "0.02"],
        "dramatiq": ["--variant", "block", "-t", "32"],
    },
}
SCRIPTS = {"arq": ["arq_bench.py", "run"], "dramatiq": ["dramatiq_bench.py"]}
# The harness writes its worker logs here (a fixed path in its code).
HARNESS_LOG_DIR = Path("/tmp/peerbench")


def peers_dir() -> Path | None:
    """``../shared/peers`` beside the repository (or a worktree's parents), if present."""
    override = os.environ.get("CALLREC_PEERS_DIR")
    if override:
        return Path(override) if (Path(override) / "arq_bench.py").exists() else None
    for parent in ROOT.parents:
        candidate = parent / "shared" / "peers"
        if (candidate / "arq_bench.py").exists():
            return candidate
    return None


def peers_python() -> Path:
    return PEERS_VENV / "bin" / "python"


def missing() -> str | None:
    """Why the peers cannot run here, or None when they can."""
    if peers_dir() is None:
        return (
            "the peers' harness (../shared/peers) is not beside this checkout "
            "(set CALLREC_PEERS_DIR to its folder)"
        )
    if not peers_python().exists():
        return f"{PEERS_VENV.name} is missing: run bench/install-tools.sh"
    return None


class Harness:
    """The peers' Redis and media server, up for a series of runs (``with Harness(tmp)``)."""

    def __init__(self, tmp: Path) -> None:
        folder = peers_dir()
        assert folder is not None
        self.folder = folder
        self.tmp = tmp
        self.media_port = free_port()
        self._redis = EmbeddedRedis()
        self._media: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    def __enter__(self) -> Harness:
        HARNESS_LOG_DIR.mkdir(parents=True, exist_ok=True)
        self._redis.__enter__()
        self.env = dict(
            os.environ,
            PEERBENCH_REDIS_HOST="127.0.0.1",
            PEERBENCH_REDIS_PORT=str(self._redis.port),
            PEERBENCH_MEDIA=f"http://127.0.0.1:{self.media_port}",
            PEERBENCH_OUT=str(self.tmp / "peers-out"),
            PYTHONUNBUFFERED="1",
        )
        with (self.tmp / "peers-fake-media.log").open("wb") as log:
            self._media = subprocess.Popen(
                [str(peers_python()), "fake_media.py", "--port", str(self.media_port)],
                cwd=self.folder,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_http(f"http://127.0.0.1:{self.media_port}/stats", self._media)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._media is not None:
            self._media.terminate()
            self._media.wait(timeout=15)
        self._redis.__exit__(None, None, None)

    def run(self, peer: str, workload: str, order: str) -> dict[str, Any]:
        """One run of ``peer`` at its best configuration; the harness's result line."""
        result = _run_one(
            self.folder, self.env, self.tmp, peer, workload, order, BEST[workload, order][peer]
        )
        print(f"  {peer} {workload} {order}: {result['wall_s']:.2f} s", file=sys.stderr, flush=True)
        return result


def _run_one(
    folder: Path,
    env: dict[str, str],
    tmp: Path,
    peer: str,
    workload: str,
    order: str,
    args: list[str],
) -> dict[str, Any]:
    cmd = [str(peers_python()), *SCRIPTS[peer], "--workload", workload, "--order", order]
    cmd += ["-p", "2", *args, "--reps", "1", "--timeout", "300"]
    cmd += ["--results", str(tmp / "peers-results.jsonl")]
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode != 0 or not lines:
        raise AssertionError(f"peer run failed: {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1])
    if result["timed_out"] or result["completed"] != result["jobs"]:
        raise AssertionError(f"peer run did not complete every job: {result}")
    result["config"] = " ".join(args)
    return result


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}'s server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {timeout_s} s")
