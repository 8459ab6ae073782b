"""One row of ``callrec check``: a name, ``ok`` / ``warn`` (works, but read the note) /
``FAIL``, and a one-line detail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
