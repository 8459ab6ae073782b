"""``callrec.processes.stop_processes``, the one way launchers stop their servers, on
real child processes: a polite one exits on the signal, a stubborn one is killed after
the grace period, one that already exited is left alone, and every one is reaped."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from callrec.processes import stop_process, stop_processes

# Each says "ready" once its signal handling is in place, then sleeps.
POLITE = "import time; print('ready', flush=True); time.sleep(600)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)


def spawn(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"  # its handlers are set
    proc.stdout.close()
    return proc


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:  # whatever a failed test left running
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_polite_ones_exit_on_the_signal_stubborn_ones_are_killed(
    started: list[subprocess.Popen[bytes]],
) -> None:
    started += [spawn(POLITE), spawn(STUBBORN), spawn(POLITE)]
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    assert done.wait(timeout=30) == 0
    codes = stop_processes([*started, done], grace_s=1)
    assert codes == [-signal.SIGTERM, -signal.SIGKILL, -signal.SIGTERM, 0]
    # Reaped: nothing left to wait for.
    assert all(proc.returncode is not None for proc in started)


def test_one_process_with_another_signal(started: list[subprocess.Popen[bytes]]) -> None:
    started.append(spawn(STUBBORN))
    assert stop_process(started[0], grace_s=30, sig=signal.SIGINT) == -signal.SIGINT
    started.append(spawn(STUBBORN))
    assert stop_process(started[1], grace_s=30, sig=signal.SIGKILL) == -signal.SIGKILL
