"""Build the Starlette application from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from calls import shards
from calls.redis_client import TRANSIENT, RedisClient, client_for, detect_cluster, is_cluster
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

log = logging.getLogger(__name__)

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


def _clients(settings: Settings, *, cluster: bool) -> tuple[RedisClient, RedisClient]:
    """The request client and the blocking-read client (its socket timeout outlasts
    REQUEST_SOCKET_TIMEOUT_S and every SSE block)."""
    assert settings.redis_url
    redis = client_for(
        settings.redis_url,
        cluster=cluster,
        purpose="web",
        socket_timeout_s=REQUEST_SOCKET_TIMEOUT_S,
    )
    blocking_redis = client_for(
        settings.redis_url,
        cluster=cluster,
        purpose="web",
        socket_timeout_s=status_events.read_socket_timeout_s(settings.sse_keepalive_s),
    )
    return redis, blocking_redis


async def _settle(
    app: Starlette, settings: Settings, subaccounts: SubaccountDirectory | None
) -> None:
    """Redis was unreachable at start: the web serves meanwhile (503s, /readyz not ready)
    on single-server clients. Once Redis answers, register this process's shards and,
    if the URL names a cluster node, switch to cluster clients."""
    assert settings.redis_url
    cluster = await detect_cluster(settings.redis_url)
    state: AppState = app.state.callrec
    if cluster:
        redis, blocking_redis = _clients(settings, cluster=True)
        accounts = AccountRegistry(redis, secret_box(settings))
        app.state.callrec = replace(
            state,
            redis=redis,
            blocking_redis=blocking_redis,
            registry=CallRegistry(redis),
            accounts=accounts,
            webhook_accounts=WebhookAccounts(settings.twilio, accounts, subaccounts),
        )
        log.info("redis: a cluster; cluster clients from now on")
    await register_until_done(app.state.callrec)
    if cluster:
        # Requests still running on the old clients fail over to 503 like an outage.
        await state.blocking_redis.aclose()
        await state.redis.aclose()


async def register_until_done(state: AppState) -> None:
    """Workers configured with another N read this process's shards too."""
    delay_s = 0.1
    while True:
        try:
            await shards.register(state.redis, state.shards)
            return
        except TRANSIENT as exc:
            log.warning("redis unavailable (%s); shards not registered yet", exc)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        assert settings.redis_url
        try:
            cluster: bool | None = await is_cluster(settings.redis_url)
        except TRANSIENT as exc:
            log.warning("redis unreachable at start (%s): serving 503s until it answers", exc)
            cluster = None
        redis, blocking_redis = _clients(settings, cluster=bool(cluster))
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
            shards=shards.ShardMap(settings.event_stream_shards),
            store=store,
            accounts=accounts,
            webhook_accounts=WebhookAccounts(twilio, accounts, subaccounts),
            stopping=stopping,
        )
        settling = asyncio.create_task(
            _settle(app, settings, subaccounts)
            if cluster is None
            else register_until_done(app.state.callrec)
        )
        try:
            yield
        finally:
            settling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await settling
            state: AppState = app.state.callrec
            if subaccounts is not None:
                await subaccounts.aclose()
            await store.close()
            await state.blocking_redis.aclose()
            await state.redis.aclose()

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
