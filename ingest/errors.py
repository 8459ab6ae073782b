"""The one place exceptions become HTTP answers."""

from __future__ import annotations

import logging

from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError as RedisReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

from calls.errors import CallrecError, TooManyRequests, Unavailable
from calls.redis_client import is_transient

log = logging.getLogger(__name__)

REDIS_RETRY_AFTER_S = 5


def _answer(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


async def callrec_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CallrecError)
    headers = None
    if isinstance(exc, (Unavailable, TooManyRequests)):
        headers = {"Retry-After": str(exc.retry_after_s)}
    return _answer(exc.status_code, exc.detail, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _answer(exc.status_code, exc.detail, dict(exc.headers or {}))


async def redis_down(request: Request, exc: Exception) -> Response:
    log.warning("redis unavailable: %s", exc)
    return _answer(
        503,
        "storage of call state unavailable, retry shortly",
        {"Retry-After": str(REDIS_RETRY_AFTER_S)},
    )


async def redis_reply(request: Request, exc: Exception) -> Response:
    """An error reply: the cluster settling (a script refused mid-migration) is a 503
    like an outage; anything else is a bug, logged."""
    if is_transient(exc):
        return await redis_down(request, exc)
    log.error("redis error reply: %s", exc)
    return _answer(500, "internal error")


async def internal_attribute_error(request: Request, exc: Exception) -> Response:
    """redis-py's cluster client can raise AttributeError from a connection a failover
    tore down (calls.redis_client.is_transient): that is a 503; any other is a bug."""
    if is_transient(exc):
        return await redis_down(request, exc)
    log.error("internal error: %r", exc, exc_info=exc)
    return _answer(500, "internal error")


HANDLERS: dict[type[Exception] | int, ExceptionHandler] = {
    CallrecError: callrec_error,
    HTTPException: http_error,
    RedisConnectionError: redis_down,
    RedisTimeoutError: redis_down,
    # A replica promoted mid-failover answers writes with READONLY for a moment.
    RedisReadOnlyError: redis_down,
    # A cluster failing over or migrating a slot, past the client's own retries.
    ClusterError: redis_down,
    ClusterDownError: redis_down,
    TryAgainError: redis_down,
    AskError: redis_down,
    RedisClusterException: redis_down,
    ResponseError: redis_reply,
    AttributeError: internal_attribute_error,
}
