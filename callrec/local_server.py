"""What the servers this program starts for itself on loopback have in common (the
embedded Redis, the embedded cluster, the local S3): ``with`` starts one, and leaving
the block, or a start that fails half-way, stops it and removes what it left behind."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class LocalServer(ABC):
    @abstractmethod
    def start(self) -> None:
        """Start it and return once it answers."""

    @abstractmethod
    def cleanup(self) -> None:
        """Stop whatever runs and remove what it owns; safe to call again, or after a
        start that failed."""

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
