"""Build the Starlette application from settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio.cluster import RedisCluster
from starlette.applications import Starlette
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from calls.redis_client import connect
from calls.registry import CallRegistry
from config.settings import Settings
from ingest import calls_api, health, metrics, page, playback, status_events, webhooks
from ingest.errors import HANDLERS
from ingest.shutdown import Stopping
from ingest.state import AppState
from ingest.status_hub import StatusHub
from storage.factory import open_store

ROUTES = [
    Route("/", page.index, methods=["GET"]),
    Route("/healthz", health.healthz, methods=["GET"]),
    Route("/readyz", health.readyz, methods=["GET"]),
    Route("/metrics", metrics.metrics, methods=["GET"]),
    Route("/webhooks/twilio/{business_id}/call-status", webhooks.call_status, methods=["POST"]),
    Route(
        "/webhooks/twilio/{business_id}/recording-status",
        webhooks.recording_status,
        methods=["POST"],
    ),
    Route("/api/calls", calls_api.list_calls, methods=["GET"]),
    Route("/api/calls/{call_sid}/recording", playback.play, methods=["GET", "HEAD"]),
    Route("/api/calls/{call_sid}/download", playback.download, methods=["GET", "HEAD"]),
    Route("/api/calls/{call_sid}/recording/status", playback.status, methods=["GET"]),
    Route("/api/events", status_events.events, methods=["GET"]),
]


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = await connect(settings, purpose="web")
        # The hub's blocking read outlasts the request client's socket timeout.
        reader = await connect(settings, purpose="reader")
        hub = StatusHub(
            redis,
            reader,
            cluster=isinstance(reader, RedisCluster),
            max_per_business=settings.sse_max_streams_per_business,
            max_total=settings.sse_max_streams,
        )
        hub.start()
        store = open_store(settings)
        token = settings.twilio.auth_token
        stopping = Stopping()
        stopping.install()
        app.state.callrec = AppState(
            settings=settings,
            redis=redis,
            hub=hub,
            registry=CallRegistry(redis),
            store=store,
            validator=RequestValidator(token) if token else None,
            stopping=stopping,
        )
        try:
            yield
        finally:
            await store.close()
            await hub.stop()
            await reader.aclose()
            await redis.aclose()

    return Starlette(routes=ROUTES, exception_handlers=HANDLERS, lifespan=lifespan)
