"""Logging setup. Only entry points (web app module, worker main, CLI) call this.

Two concerns beyond format:

- API tokens never reach a log. ``<audio src>`` and ``EventSource`` cannot send headers,
  so the page puts its token in the query string, and uvicorn's access log prints query
  strings. :class:`RedactSecrets` rewrites, in every record, the value of each query
  parameter that the app would read as a token (the query of every URL in the message,
  parsed and percent-decoded as the app decodes it, so ``%74oken=`` or ``TOKEN=`` are
  caught, not just one spelling), ``Bearer <...>``, and anything shaped like a JWT. It
  is installed on our handler and on the ``uvicorn.access`` logger (whose records never
  reach the root). The Procfile's command is fixed, so this happens when
  ``ingest.app`` is imported: uvicorn has configured its loggers by then.
- ``LOG_FORMAT=json``: one JSON object per line for our records and uvicorn's alike.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import urllib.parse
from collections.abc import Mapping
from typing import Literal

UVICORN_LOGGERS = ("uvicorn", "uvicorn.access")
REDACTED = "[redacted]"
# Query parameters whose values are secrets, by their decoded, lower-cased names.
SECRET_PARAMS = frozenset({"token", "access_token"})
# A URL (or a path) with a query: the run of characters around a "?" up to a space or a
# quote. Only a query is parsed: "token=%s" in our own messages is a slot's fencing
# token, not a secret.
_URL_WITH_QUERY = re.compile(r"[^\s\"'<>]*\?[^\s\"'<>]*")
# A printf placeholder as the whole value: left for the formatted message's own pass.
_PLACEHOLDER = re.compile(r"%(?:\(\w+\))?[-#0 +]*(?:\d+|\*)?(?:\.\d+)?[diouxXeEfFgGcrsa]")
_PARAM_SEPARATORS = re.compile(r"([&?;])")  # captured: split keeps them
_DECODE_ROUNDS = 3  # a name encoded twice (%2574oken) is still caught
# Outside queries: after "Bearer", or anything shaped like a JWT.
_SECRETS = (
    re.compile(r"(?i)(\bbearer\s+)(?!%)[\w.~+/=-]+"),
    re.compile(r"()\beyJ[\w-]+\.[\w-]+\.[\w-]*"),
)


def _param_name(raw: str) -> str:
    """A query parameter's name as the app reads it (``parse_qsl`` decodes ``+`` and
    ``%xx``), decoded again while that changes it, lower-cased."""
    name = raw
    for _ in range(_DECODE_ROUNDS):
        decoded = urllib.parse.unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().lower()


def _redact_query(query: str) -> str:
    # Split on "&" as the app does, and on "?" and ";" too, as other parsers may: a
    # broader reading only hides more.
    parts = _PARAM_SEPARATORS.split(query)
    for i in range(0, len(parts), 2):
        name, eq, value = parts[i].partition("=")
        if eq and value and _param_name(name) in SECRET_PARAMS:
            if not _PLACEHOLDER.fullmatch(value):
                parts[i] = f"{name}={REDACTED}"
    return "".join(parts)


def _redact_url(match: re.Match[str]) -> str:
    # The query is what follows the first "?", up to any "#" (as urlsplit splits it,
    # without its check of the host part, which raises on a stray "["). A fragment is
    # read the same way: "#access_token=" is how OAuth's implicit flow hands one over.
    before, _, rest = match.group(0).partition("?")
    query, hash_, fragment = rest.partition("#")
    return f"{before}?{_redact_query(query)}{hash_}{_redact_query(fragment)}"


def redact(text: str) -> str:
    text = _URL_WITH_QUERY.sub(_redact_url, text)
    for pattern in _SECRETS:
        text = pattern.sub(rf"\g<1>{REDACTED}", text)
    return text


class RedactSecrets(logging.Filter):
    """Replaces tokens in a record's message and arguments, keeping their shapes
    (uvicorn's access formatter unpacks ``args`` as a tuple)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        if record.name != "uvicorn.access" and record.args:
            # A secret assembled only by formatting (say, a URL object as an argument).
            try:
                message = record.getMessage()
            except (TypeError, ValueError):
                return True  # logging reports the broken call itself
            if redact(message) != message:
                record.msg, record.args = redact(message), None
        return True


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
            doc["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc)


_redactor = RedactSecrets()


def configure_logging(fmt: Literal["text", "json"] = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(_redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO; that would drown the contract's event lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Under uvicorn (the web process), its loggers already have handlers of their own.
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if fmt == "json" and logger.handlers:
            logger.handlers[:] = [handler]
        for target in (logger, *logger.handlers):
            if _redactor not in target.filters:
                target.addFilter(_redactor)
