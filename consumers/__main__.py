"""``python -m consumers``: the worker process of the Procfile."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import sys

from calls.errors import RedisTlsError
from config.logging import configure_logging
from config.settings import WORKER_REQUIRED, Settings, SettingsError, load_settings
from consumers.runtime import build_worker

log = logging.getLogger("consumers")

# Exit codes, for process managers and operators reading "exited with status N".
EXIT_DRAINED = 0  # stopped (SIGTERM/SIGINT): every running download finished in the grace
EXIT_CONFIG = 2  # a variable is missing or malformed, or Redis's TLS certificate refused;
# nothing was started
EXIT_HANDED_BACK = 75  # stopped, and downloads still running after the grace period were
# handed back to the head of their queues for other workers (EX_TEMPFAIL: nothing lost)


def consumer_name() -> str:
    """Unique per process: host and pid for operators, plus a random part, because
    containers sharing the host's network share its hostname and are all PID 1, and two
    live workers under one consumer name would take each other's pending entries."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


async def _main(settings: Settings) -> int:
    consumer = consumer_name()
    worker, close = await build_worker(settings, consumer)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.set)
    try:
        handed_back = await worker.run()
    finally:
        await close()
    code = EXIT_HANDED_BACK if handed_back else EXIT_DRAINED
    log.info("worker %s stopped exit_code=%d handed_back=%d", consumer, code, handed_back)
    return code


def main() -> int:
    try:
        settings = load_settings(require=WORKER_REQUIRED)
    except SettingsError as exc:
        print(f"callrec worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_format)
    try:
        return asyncio.run(_main(settings))
    except RedisTlsError as exc:
        print(f"callrec worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
