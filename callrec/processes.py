"""Stopping child processes: the one way every launcher (``callrec dev``, the embedded
Redis, the local S3, the tests' and the bench's stacks) ends the servers it started."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterable
from typing import Any


def stop_processes(
    procs: Iterable[subprocess.Popen[Any]],
    *,
    grace_s: float,
    sig: signal.Signals = signal.SIGTERM,
) -> list[int]:
    """Send ``sig`` to each process still running, give them all ``grace_s`` together
    to exit, then SIGKILL whichever has not; returns the exit codes, every process
    reaped (no zombie is left behind)."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return [proc.returncode for proc in procs]


def stop_process(
    proc: subprocess.Popen[Any], *, grace_s: float, sig: signal.Signals = signal.SIGTERM
) -> int:
    """:func:`stop_processes` for one process."""
    [code] = stop_processes([proc], grace_s=grace_s, sig=sig)
    return code
