"""Logging setup. Only entry points (web app module, worker main, CLI) call this."""

from __future__ import annotations

import json
import logging
import sys
from typing import Literal


class _JsonFormatter(logging.Formatter):
    """One JSON object per line; the contract's ``EVENT key=value`` message stays intact
    in ``message`` and its fields are lifted out so log pipelines can filter on them."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        doc: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        head, _, rest = message.partition(" ")
        if head.isupper() and "=" in rest:
            doc["event"] = head
            for part in rest.split(" "):
                key, sep, value = part.partition("=")
                if sep:
                    doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def configure_logging(fmt: Literal["text", "json"] = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO; that would drown the contract's event lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
