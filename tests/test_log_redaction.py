"""RedactSecrets: API tokens never reach a log line, and formatting never breaks."""

from __future__ import annotations

import logging

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
