"""What the kernel and Redis say about who holds a recording's file lock and who reads
the event stream: states a test can wait on, whether the processes run on this host or
in containers sharing its kernel."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from calls import keys
from storage.disk import LOCKS_DIRNAME
from tests.clients import SyncClient

PROC_LOCKS = Path("/proc/locks")


@dataclass(frozen=True)
class FlockState:
    """Process ids (as this test sees them) holding, and blocked waiting for, a flock."""

    holders: frozenset[int]
    waiters: frozenset[int]


def lock_path(recordings_dir: Path, call_sid: str) -> Path:
    """A recording's lock file in a disk store: storage.disk.DiskStore.lock_path_for,
    without creating directories as this user."""
    return recordings_dir / LOCKS_DIRNAME / f"{call_sid}.lock"


def flock_state(path: Path) -> FlockState:
    """From ``/proc/locks``: one line per lock, ``->`` marking a blocked request, with
    the owner's pid and the file's ``major:minor:inode`` (device numbers in hex)."""
    st = os.stat(path)
    holders: set[int] = set()
    waiters: set[int] = set()
    me = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in PROC_LOCKS.read_text().splitlines():
        fields = line.split()
        blocked = fields[1] == "->"
        if blocked:
            del fields[1]
        kind, pid, where = fields[1], fields[4], fields[5]
        major, minor, inode = where.split(":")
        if kind == "FLOCK" and (int(major, 16), int(minor, 16), int(inode)) == me:
            (waiters if blocked else holders).add(int(pid))
    return FlockState(frozenset(holders), frozenset(waiters))


def consumer_idle_ms(client: SyncClient, consumer: str) -> int | None:
    """Milliseconds since the worker named ``consumer`` (its ``hostname-pid``; the name
    in the group adds a random part) last called XREADGROUP or claimed in the workers'
    group; None if it has not joined."""
    idle = [
        int(info["idle"])
        for info in client.xinfo_consumers(keys.EVENTS, keys.EVENTS_GROUP)
        if _text(info["name"]).startswith(f"{consumer}-")
    ]
    assert len(idle) <= 1, f"several consumers named {consumer}-*"
    return idle[0] if idle else None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
