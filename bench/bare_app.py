"""The usual choice: Starlette's FileResponse in a bare endpoint (no token, no tenant check,
no Redis). BENCH_FILE names the one file it serves."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

PATH = os.environ["BENCH_FILE"]


async def recording(request: Request) -> FileResponse:
    return FileResponse(PATH, media_type="audio/mpeg")


app = Starlette(routes=[Route("/file", recording)])
