"""Parsing of the HTTP ``Range`` request header (RFC 9110 §14), single byte ranges only.

Only one ``bytes`` range is ever honoured. Multipart/byteranges answers are deliberately not
implemented: audio players only ever ask for one range at a time, and serving many ranges per
request is a classic amplification/DoS surface (many tiny or overlapping ranges, each costing
a read and a part header). RFC 9110 lets a server ignore ``Range`` altogether, so anything we
don't want to honour is answered with the full 200 instead of an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from calls.digits import ascii_digits

__all__ = ["MAX_RANGE_HEADER_LENGTH", "ByteRange", "RangeNotSatisfiable", "parse_range"]

# Real players send ~20 bytes; anything this long is either abuse or multi-range, both of
# which we ignore, so refuse to even look at it.
MAX_RANGE_HEADER_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range ``[start, end]``, the same convention as ``Content-Range``."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


class RangeNotSatisfiable(Exception):
    """A well-formed single range that selects no byte of the representation (answer 416)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for size {size}")
        self.size = size


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The byte range to serve for ``header`` against a representation of ``size`` bytes.

    Returns None when the whole representation should be served with 200: no header, a
    header we ignore (malformed, another unit, several ranges, absurdly long). Raises
    RangeNotSatisfiable for a valid single range that selects nothing (start beyond the end,
    ``bytes=-0``, any range of an empty file). End positions past the end are clamped.
    """
    if header is None or len(header) > MAX_RANGE_HEADER_LENGTH:
        return None
    unit, sep, range_set = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    spec = range_set.strip()
    if "," in spec:
        # The list grammar allows empty elements ("bytes=0-99,"); only a single non-empty
        # element is a single range. Anything more is multi-range and ignored (see module doc).
        parts = [p for p in (s.strip() for s in spec.split(",")) if p]
        if len(parts) != 1:
            return None
        spec = parts[0]
    first, dash, last = spec.partition("-")
    if not dash:
        return None

    if not first:
        # Suffix range: the final N bytes.
        if not ascii_digits(last):
            return None
        suffix = int(last)
        if suffix == 0 or size <= 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(0, size - suffix), size - 1)

    if not ascii_digits(first):
        return None
    start = int(first)
    if last:
        if not ascii_digits(last):
            return None
        end = int(last)
        if end < start:
            # An invalid range-spec makes the whole header invalid, hence ignored (RFC 9110
            # §14.1.1), not unsatisfiable.
            return None
    else:
        end = size - 1
    if start >= size:
        raise RangeNotSatisfiable(size)
    return ByteRange(start, min(end, size - 1))
