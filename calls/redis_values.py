"""redis-py returns ``bytes`` (we never set ``decode_responses``: file-sized values and
stream ids stay cheap) but types most replies as broad unions; these narrow them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

StreamEntry: TypeAlias = tuple[str, dict[str, str]]


def text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def text_map(raw: Mapping[Any, Any] | None) -> dict[str, str]:
    return {text(k): text(v) for k, v in (raw or {}).items()}


def entries(raw: Any) -> list[StreamEntry]:
    """``XRANGE``-shaped replies: [(id, {field: value}), ...]."""
    return [(text(entry_id), text_map(fields)) for entry_id, fields in raw or []]


def stream_entries(raw: Any) -> list[StreamEntry]:
    """``XREAD``/``XREADGROUP`` replies: [(stream, [(id, fields), ...]), ...]."""
    out: list[StreamEntry] = []
    for _stream, items in raw or []:
        out.extend(entries(items))
    return out


def texts(raw: Iterable[Any]) -> list[str]:
    return [text(v) for v in raw]
