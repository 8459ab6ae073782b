"""The one check for a string of ASCII digits (RFC 5234 DIGIT)."""

from __future__ import annotations


def ascii_digits(text: str) -> bool:
    """``str.isdigit`` alone also accepts digits ``int()`` refuses ("²") and other
    scripts' digits (Arabic-Indic), which no header, form field or cursor of ours has."""
    return text.isascii() and text.isdigit()
