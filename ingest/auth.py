"""API tokens: HS256 JWTs carrying ``business_id`` and ``exp``.

Accepted from ``Authorization: Bearer`` or ``?token=`` (an ``<audio src>`` cannot send
headers). Every failure is the same 401 with a reason; the token itself is never logged.
"""

from __future__ import annotations

import time

import jwt
from starlette.requests import Request

from calls.errors import Unauthorized
from calls.sids import BUSINESS_ID

ALGORITHM = "HS256"
MAX_TOKEN_BYTES = 4096


def issue_token(secret: str, business_id: str, ttl_s: int) -> str:
    claims = {"business_id": business_id, "exp": int(time.time()) + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def token_from(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Authorization must be 'Bearer <token>'")
        return value.strip()
    return request.query_params.get("token")


def business_of(request: Request, secret: str) -> str:
    token = token_from(request)
    if not token:
        raise Unauthorized("missing token (Authorization: Bearer, or ?token=)")
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized("token too long")
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
    return business_id
