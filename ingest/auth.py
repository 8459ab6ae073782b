"""API tokens: HS256 JWTs carrying ``business_id`` and ``exp``; admin tokens carry
``admin: true`` instead of a business, and only ``/api/admin/...`` accepts them.

Accepted from ``Authorization: Bearer`` or ``?token=`` (an ``<audio src>`` cannot send
headers). Every failure is the same 401 with a reason; the token itself is never logged.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import jwt
from starlette.requests import Request

from calls.errors import Forbidden, Unauthorized
from calls.sids import BUSINESS_ID

ALGORITHM = "HS256"
MAX_TOKEN_BYTES = 4096


def issue_token(secret: str, business_id: str, ttl_s: int) -> str:
    claims = {"business_id": business_id, "exp": int(time.time()) + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def issue_admin_token(secret: str, ttl_s: int) -> str:
    return jwt.encode({"admin": True, "exp": int(time.time()) + ttl_s}, secret, algorithm=ALGORITHM)


def token_from(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Authorization must be 'Bearer <token>'")
        return value.strip()
    return request.query_params.get("token")


@functools.lru_cache(maxsize=1024)
def _verified(token: str, secret: str) -> tuple[str, int]:
    """(business_id, exp) of a token whose signature and claims check out; raises otherwise.

    Cached: a player fetches one recording in many Range requests with the same token, and
    verifying the signature was most of a cached play's CPU. Only successes are cached (an
    exception is never stored), and a cached token is only as good as its ``exp``, which
    the caller checks on every use; everything else verified here cannot change with time.
    """
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "business_id"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("token invalid (malformed, wrongly signed or missing claims)") from None
    business_id = claims.get("business_id")
    if not isinstance(business_id, str) or not BUSINESS_ID.fullmatch(business_id):
        raise Unauthorized("token's business_id claim must be a string id")
    return business_id, int(claims["exp"])


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token grants: one business's data until ``exp`` (Unix seconds)."""

    business_id: str
    exp: int


def grant_of(request: Request, secret: str) -> Grant:
    token = token_from(request)
    if not token:
        raise Unauthorized("missing token (Authorization: Bearer, or ?token=)")
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized("token too long")
    business_id, exp = _verified(token, secret)
    # PyJWT's own rule (no leeway): expired once exp <= now.
    if exp <= time.time():
        raise Unauthorized("token expired")
    return Grant(business_id, exp)


def business_of(request: Request, secret: str) -> str:
    return grant_of(request, secret).business_id


@functools.lru_cache(maxsize=64)
def _verified_admin(token: str, secret: str) -> tuple[bool, int]:
    """(is it an admin token, exp) of a correctly signed token; raises otherwise."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("token invalid (malformed, wrongly signed or missing claims)") from None
    return claims.get("admin") is True and "business_id" not in claims, int(claims["exp"])


def require_admin(request: Request, secret: str) -> None:
    """A valid admin token, else 401 (no valid token) or 403 (a business's token)."""
    token = token_from(request)
    if not token:
        raise Unauthorized("missing token (Authorization: Bearer, or ?token=)")
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized("token too long")
    admin, exp = _verified_admin(token, secret)
    if exp <= time.time():
        raise Unauthorized("token expired")
    if not admin:
        raise Forbidden("an admin token is required (callrec token --admin)")
