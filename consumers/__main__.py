"""``python -m consumers``: the worker process of the Procfile."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

from config.logging import configure_logging
from config.settings import WORKER_REQUIRED, Settings, SettingsError, load_settings
from consumers.runtime import build_worker

log = logging.getLogger("consumers")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_DRAINED = 0  # SIGTERM handled: in-flight work finished or handed back


async def _main(settings: Settings) -> int:
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    worker, close = await build_worker(settings, consumer)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.set)
    try:
        await worker.run()
    finally:
        await close()
    log.info("worker %s stopped", consumer)
    return EXIT_DRAINED


def main() -> int:
    try:
        settings = load_settings(require=WORKER_REQUIRED)
    except SettingsError as exc:
        print(f"callrec worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_format)
    return asyncio.run(_main(settings))


if __name__ == "__main__":
    sys.exit(main())
