"""The Procfile's two processes as argument lists, for everything that starts them
locally (``callrec dev``, the tests, the benchmarks), so they all run what production runs."""

from __future__ import annotations

import sys


def web_command(port: int, *, host: str = "127.0.0.1", log_level: str = "info") -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "ingest.app:app",
        "--host", host, "--port", str(port), "--log-level", log_level,
    ]  # fmt: skip


def worker_command() -> list[str]:
    return [sys.executable, "-m", "consumers"]
