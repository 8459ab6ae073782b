"""Build the Starlette application from settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from calls.registry import CallRegistry
from config.settings import Settings
from ingest import (
    admin,
    admin_lifecycle,
    calls_api,
    health,
    metrics,
    page,
    playback,
    status_events,
    webhooks,
)
from ingest.errors import HANDLERS
from ingest.shutdown import Stopping
from ingest.signed_media import SignedMediaFront
from ingest.state import AppState
from storage.factory import open_store
from tenants.accounts import AccountRegistry
from tenants.secrets import secret_box
from tenants.subaccounts import SubaccountDirectory
from tenants.webhook_auth import WebhookAccounts

# A request's commands answer at once: a Redis that stops answering fails the request
# fast (503) instead of holding it. (redis-py 8's default too; said here, not assumed.)
REQUEST_SOCKET_TIMEOUT_S = 5

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
    Route(
        "/webhooks/twilio/{business_id}/conference-status",
        webhooks.conference_status,
        methods=["POST"],
    ),
    Route("/api/calls", calls_api.list_calls, methods=["GET"]),
    Route("/api/calls/{call_sid}/recording", playback.play, methods=["GET", "HEAD"]),
    Route("/api/calls/{call_sid}/download", playback.download, methods=["GET", "HEAD"]),
    Route("/api/calls/{call_sid}/recording/status", playback.status, methods=["GET"]),
    Route(
        "/api/calls/{call_sid}/recordings/{recording_sid}",
        playback.play_one,
        methods=["GET", "HEAD"],
    ),
    Route(
        "/api/calls/{call_sid}/recordings/{recording_sid}/download",
        playback.download_one,
        methods=["GET", "HEAD"],
    ),
    Route(
        "/api/calls/{call_sid}/recordings/{recording_sid}/status",
        playback.status_one,
        methods=["GET"],
    ),
    Route("/api/events", status_events.events, methods=["GET"]),
    Route(
        "/api/admin/businesses/{business_id}/calls/{call_sid}",
        admin_lifecycle.erase_call,
        methods=["DELETE"],
    ),
    Route(
        "/api/admin/businesses/{business_id}/backfill",
        admin_lifecycle.start_backfill,
        methods=["POST"],
    ),
    Route(
        "/api/admin/businesses/{business_id}/backfill",
        admin_lifecycle.backfill_status,
        methods=["GET"],
    ),
    Route(
        "/api/admin/businesses/{business_id}/twilio-account",
        admin.put_twilio_account,
        methods=["PUT"],
    ),
    Route(
        "/api/admin/businesses/{business_id}/twilio-account",
        admin.get_twilio_account,
        methods=["GET"],
    ),
    Route(
        "/api/admin/businesses/{business_id}/twilio-account",
        admin.delete_twilio_account,
        methods=["DELETE"],
    ),
]


def _client(url: str, socket_timeout_s: float) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        health_check_interval=30,
        socket_connect_timeout=2,
        max_connections=512,
    )


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        assert settings.redis_url
        redis = _client(settings.redis_url, REQUEST_SOCKET_TIMEOUT_S)
        # A blocking read outlasts REQUEST_SOCKET_TIMEOUT_S: a client of its own.
        blocking_redis = _client(
            settings.redis_url, status_events.read_socket_timeout_s(settings.sse_keepalive_s)
        )
        store = open_store(settings)
        twilio = settings.twilio
        stopping = Stopping()
        stopping.install()
        accounts = AccountRegistry(redis, secret_box(settings))
        subaccounts = None
        if twilio.subaccounts == "auto" and twilio.account_sid and twilio.auth_token:
            subaccounts = SubaccountDirectory(
                api_base=twilio.api_base, main_sid=twilio.account_sid, main_token=twilio.auth_token
            )
        app.state.callrec = AppState(
            settings=settings,
            redis=redis,
            blocking_redis=blocking_redis,
            registry=CallRegistry(redis),
            store=store,
            accounts=accounts,
            webhook_accounts=WebhookAccounts(twilio, accounts, subaccounts),
            stopping=stopping,
        )
        try:
            yield
        finally:
            if subaccounts is not None:
                await subaccounts.aclose()
            await store.close()
            await blocking_redis.aclose()
            await redis.aclose()

    middleware = []
    if settings.signed_urls is not None:
        # SERVE_VIA=signed: /media/ is where plays redirect to (nginx answers it itself
        # when in front). Answered ahead of the router and its exception middleware, as it
        # is most of a player's requests.
        middleware.append(
            Middleware(
                SignedMediaFront,
                signed=settings.signed_urls,
                recordings_dir=settings.recordings_dir,
            )
        )
    return Starlette(
        routes=ROUTES, exception_handlers=HANDLERS, lifespan=lifespan, middleware=middleware
    )
