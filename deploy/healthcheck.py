"""The image's HEALTHCHECK: a web container must answer ``/healthz`` on its ``PORT``; a
worker container (no port) is healthy while its process runs, which Docker already knows.

PID 1 is the Procfile's process itself (``deploy/entrypoint.sh`` execs it), so its
command line tells which one this container runs. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path


def main() -> int:
    cmdline = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    if not any(b"uvicorn" in part for part in cmdline):
        return 0
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
