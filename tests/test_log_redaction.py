"""RedactSecrets: API tokens never reach a log line, and formatting never breaks."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, unquote

from config.logging import RedactSecrets
from tests.stack import token

JWT = token("biz1")


def record(name: str, msg: str, *args: object) -> logging.LogRecord:
    r = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    assert RedactSecrets().filter(r)
    return r


def test_access_log_arguments_keep_their_shape() -> None:
    fmt = '%s - "%s %s HTTP/%s" %d'
    r = record("uvicorn.access", fmt, "1.2.3.4:5", "GET", f"/api/events?token={JWT}", "1.1", 200)
    assert isinstance(r.args, tuple) and len(r.args) == 5
    assert r.getMessage() == '1.2.3.4:5 - "GET /api/events?token=[redacted] HTTP/1.1" 200'


def test_placeholders_and_fencing_tokens_are_left_alone() -> None:
    r = record("consumers.download_job", "download begins sid=%s token=%s", "CA1", "7")
    assert r.getMessage() == "download begins sid=CA1 token=7"


def test_secrets_assembled_by_formatting_are_redacted() -> None:
    r = record("ingest", "request to %s with %s", f"http://h/x?a=1&token={JWT}", f"Bearer {JWT}")
    assert JWT not in r.getMessage()
    assert r.getMessage() == "request to http://h/x?a=1&token=[redacted] with Bearer [redacted]"
    assert JWT not in record("x", "bare %s", JWT).getMessage()


def encoded(text: str) -> str:
    """Every byte percent-encoded: the app decodes it back (parse_qsl)."""
    return "".join(f"%{byte:02X}" for byte in text.encode())


def test_every_spelling_the_app_reads_as_a_token_is_redacted() -> None:
    # Values percent-encoded too, so nothing shaped like a JWT is left to catch.
    value = encoded(JWT)
    assert parse_qs(f"%74oken={value}")["token"] == [JWT]  # the app would accept it
    spellings = {
        f"/api/events?%74oken={value}": "/api/events?%74oken=[redacted]",
        f"/api/events?TOKEN={value}": "/api/events?TOKEN=[redacted]",
        f"/api/events?%54%4F%4B%45%4E={value}": "/api/events?%54%4F%4B%45%4E=[redacted]",
        f"/x?a=1&tok%65n={value}&b=2": "/x?a=1&tok%65n=[redacted]&b=2",
        f"/x?token={value}&a=1&token={value}": "/x?token=[redacted]&a=1&token=[redacted]",
        f"/x?%2574oken={value}": "/x?%2574oken=[redacted]",
        f"/x?+token={value}": "/x?+token=[redacted]",
        f"/x?access%5Ftoken={value}#top": "/x?access%5Ftoken=[redacted]#top",
        f"/x?a=1#access_token={value}&b=2": "/x?a=1#access_token=[redacted]&b=2",
        f"http://h:8000/x?a=1;token={value}": "http://h:8000/x?a=1;token=[redacted]",
    }
    fmt = '%s - "%s %s HTTP/%s" %d'
    for path, expected in spellings.items():
        r = record("uvicorn.access", fmt, "1.2.3.4:5", "GET", path, "1.1", 200)
        assert r.getMessage() == f'1.2.3.4:5 - "GET {expected} HTTP/1.1" 200', path
        assert JWT not in unquote(unquote(r.getMessage()))


def test_a_query_without_a_token_and_text_outside_queries_are_kept() -> None:
    kept = "GET /api/calls?limit=50&before=1700000000:CA1 then sid=CA1 token=7 what? tokens"
    assert record("ingest", kept).getMessage() == kept
    # A placeholder in a template is left for the formatted message's own pass.
    r = record("ingest", "fetch /x?token=%s&tok%%65n=%s&n=%d", JWT, "abc", 3)
    assert r.getMessage() == "fetch /x?token=[redacted]&tok%65n=[redacted]&n=3"
