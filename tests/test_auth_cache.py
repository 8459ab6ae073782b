"""Verified tokens are cached per token string (a player sends the same one with every
Range request); the cache must never outlive a token's ``exp`` or accept a bad one."""

from __future__ import annotations

import time

import jwt
import pytest
from starlette.requests import Request

from calls.errors import Unauthorized
from ingest.auth import ALGORITHM, business_of, issue_token
from tests.stack import wait_for

SECRET = "auth-cache-secret-" + "y" * 32


def _request(token: str) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/calls",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode())],
    }
    return Request(scope)


def test_cached_token_still_expires() -> None:
    exp = int(time.time()) + 2
    token = jwt.encode({"business_id": "77", "exp": exp}, SECRET, algorithm=ALGORITHM)
    assert business_of(_request(token), SECRET) == "77"
    assert business_of(_request(token), SECRET) == "77"  # served from the cache
    wait_for(lambda: time.time() >= exp, "the token's exp to pass", timeout_s=5)
    with pytest.raises(Unauthorized, match="expired"):
        business_of(_request(token), SECRET)


def test_cache_is_per_secret_and_never_caches_failures() -> None:
    token = issue_token(SECRET, "78", 3600)
    assert business_of(_request(token), SECRET) == "78"
    with pytest.raises(Unauthorized, match="invalid"):
        business_of(_request(token), SECRET + "-rotated")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for _ in range(2):
        with pytest.raises(Unauthorized, match="invalid"):
            business_of(_request(tampered), SECRET)
