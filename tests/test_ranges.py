"""ingest.ranges.parse_range: RFC 9110 single-range semantics and robustness."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.ranges import ByteRange, RangeNotSatisfiable, parse_range

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=999-999", ByteRange(999, 999)),
        ("bytes=100-", ByteRange(100, 999)),
        ("bytes=0-", ByteRange(0, 999)),
        ("bytes=-500", ByteRange(500, 999)),
        ("bytes=-1", ByteRange(999, 999)),
        ("bytes=-1000", ByteRange(0, 999)),
        ("bytes=-5000", ByteRange(0, 999)),  # suffix longer than the file: all of it
        ("bytes=900-5000", ByteRange(900, 999)),  # end clamped
        ("BYTES=0-9", ByteRange(0, 9)),  # unit is case-insensitive
        (" bytes=0-9 ", ByteRange(0, 9)),
        ("bytes=0-9,", ByteRange(0, 9)),  # empty list elements don't make it multi-range
        ("bytes=00010-00019", ByteRange(10, 19)),
    ],
)
def test_satisfiable(header: str, expected: ByteRange) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1000-",
        "bytes=1000-1000",
        "bytes=5000-6000",
        "bytes=-0",
    ],
)
def test_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, SIZE)
    assert info.value.size == SIZE


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-0"])
def test_empty_file_is_never_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, 0)
    assert info.value.size == 0


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=abc",
        "bytes=a-b",
        "bytes=5",
        "bytes=10-5",  # last < first: invalid, so ignored rather than 416
        "bytes=-5-6",
        "bytes=+1-2",
        "bytes=1 -2",
        "bytes=0x10-0x20",
        "bytes=1.5-2",
        "bytes=\u0661-\u0662",  # Arabic-Indic digits
        "bytes=²-³",
        "items=0-99",
        "bits=0-99",
        "0-99",
        "bytes=0-1,5-6",
        "bytes=0-1, 2-3",
        "bytes=-1,0-0",
        "bytes=" + ",".join(f"{i}-{i}" for i in range(150)),
        "bytes=0-" + "9" * 8000,  # absurdly long: ignored before any parsing
        "bytes=0-99" + " " * 8192,
    ],
)
def test_ignored_means_full_response(header: str | None) -> None:
    assert parse_range(header, SIZE) is None


def test_long_multi_range_with_unsatisfiable_parts_is_still_ignored() -> None:
    # Multi-range is ignored as a whole, so it must not turn into a 416 either.
    assert parse_range("bytes=5000-6000,7000-8000", SIZE) is None


def test_byte_range_helpers() -> None:
    r = ByteRange(100, 199)
    assert r.length == 100
    assert r.content_range(1000) == "bytes 100-199/1000"
    assert ByteRange(0, 0).length == 1


@given(
    header=st.one_of(
        st.text(max_size=64),
        st.from_regex(r"\A\s*[bB][yY][tT][eE][sS]\s*=\s*[0-9]{0,8}-[0-9]{0,8}(,[0-9]{0,3}-)?\s*\Z"),
        st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(0, 10**8), st.integers(0, 10**8)),
        st.builds(lambda n: f"bytes=-{n}", st.integers(0, 10**8)),
    ),
    size=st.integers(0, 10**7),
)
def test_parse_range_total(header: str, size: int) -> None:
    try:
        result = parse_range(header, size)
    except RangeNotSatisfiable as exc:
        assert exc.size == size
        return
    if result is not None:
        assert 0 <= result.start <= result.end < size
        assert result.length == result.end - result.start + 1
