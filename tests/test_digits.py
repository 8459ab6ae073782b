"""The one ASCII-digit check that every parser of numbers from outside uses."""

from __future__ import annotations

from calls.digits import ascii_digits


def test_only_ascii_digits_are_digits() -> None:
    assert ascii_digits("0123456789")
    # Digits str.isdigit() accepts but no header, form field or cursor of ours has.
    for text in ("²", "١٢", "12³", "", " 1", "1_000", "-1", "+1"):
        assert not ascii_digits(text), text
