"""Liveness and readiness."""

from __future__ import annotations

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ingest.state import app_state


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> Response:
    try:
        await app_state(request).redis.ping()
    except (RedisError, OSError) as exc:
        return JSONResponse(
            {"ok": False, "redis": f"unreachable: {type(exc).__name__}"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return JSONResponse({"ok": True, "redis": "ok"})
