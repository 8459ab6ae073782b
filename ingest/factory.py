"""Build the Starlette application from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from calls import shards
from calls.redis_client import TRANSIENT, RedisClient, client_for, detect_cluster, probe_cluster
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
from ingest.status_hub import StatusHub
from storage.factory import open_store
from tenants.accounts import AccountRegistry
from tenants.secrets import secret_box
from tenants.subaccounts import SubaccountDirectory
from tenants.webhook_auth import WebhookAccounts

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


@dataclass(frozen=True, slots=True)
class _Clients:
    redis: RedisClient  # request commands (the bounded pool, a 5 s socket timeout)
    reader: RedisClient  # the hub's reads: a socket timeout that outlasts its block
    hub: StatusHub

    @staticmethod
    def open(settings: Settings, *, cluster: bool) -> _Clients:
        assert settings.redis_url
        url, tls = settings.redis_url, settings.redis_tls
        redis = client_for(url, cluster=cluster, purpose="web", tls=tls, pool=settings.redis_pool)
        reader = client_for(url, cluster=cluster, purpose="reader", tls=tls)
        hub = StatusHub(
            redis,
            reader,
            cluster=cluster,
            max_per_business=settings.sse_max_streams_per_business,
            max_total=settings.sse_max_streams,
        )
        hub.start()
        return _Clients(redis, reader, hub)

    async def close(self) -> None:
        await self.hub.stop()
        await self.reader.aclose()
        await self.redis.aclose()


def _on_clients(
    state: AppState, clients: _Clients, subaccounts: SubaccountDirectory | None
) -> AppState:
    """``state`` with everything that holds a Redis client built on ``clients``."""
    accounts = AccountRegistry(clients.redis, secret_box(state.settings))
    return replace(
        state,
        redis=clients.redis,
        hub=clients.hub,
        registry=CallRegistry(clients.redis),
        accounts=accounts,
        webhook_accounts=WebhookAccounts(state.settings.twilio, accounts, subaccounts),
    )


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


async def _settle(
    app: Starlette,
    first: _Clients,
    subaccounts: SubaccountDirectory | None,
    *,
    known: bool,
    opened: list[_Clients],
) -> None:
    """Register this process's event stream shards once Redis answers. ``known``: whether
    the start already found out if Redis is a cluster. If not, it was unreachable at start:
    the web serves meanwhile (503s, /readyz not ready) on single-server clients and, if the
    URL names a cluster node, switches to cluster clients (and a hub that polls), noted
    in ``opened`` for the lifespan to close."""
    state: AppState = app.state.callrec
    settings = state.settings
    assert settings.redis_url
    if not known and await detect_cluster(settings.redis_url, settings.redis_tls):
        clients = _Clients.open(settings, cluster=True)
        opened.append(clients)
        app.state.callrec = _on_clients(state, clients, subaccounts)
        log.info("redis: a cluster; cluster clients from now on")
        # Requests and streams still on the old clients fail over like an outage (a 503;
        # an EventSource reconnects).
        await first.close()
    await register_until_done(app.state.callrec)


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        assert settings.redis_url
        cluster = await probe_cluster(settings.redis_url, settings.redis_tls)
        clients = _Clients.open(settings, cluster=bool(cluster))
        store = open_store(settings)
        twilio = settings.twilio
        stopping = Stopping()
        stopping.install()
        subaccounts = None
        if twilio.subaccounts == "auto" and twilio.account_sid and twilio.auth_token:
            subaccounts = SubaccountDirectory(
                api_base=twilio.api_base, main_sid=twilio.account_sid, main_token=twilio.auth_token
            )
        accounts = AccountRegistry(clients.redis, secret_box(settings))
        app.state.callrec = AppState(
            settings=settings,
            redis=clients.redis,
            hub=clients.hub,
            registry=CallRegistry(clients.redis),
            shards=shards.ShardMap(settings.event_stream_shards),
            store=store,
            accounts=accounts,
            webhook_accounts=WebhookAccounts(twilio, accounts, subaccounts),
            stopping=stopping,
        )
        opened = [clients]
        settling = asyncio.create_task(
            _settle(app, clients, subaccounts, known=cluster is not None, opened=opened)
        )
        try:
            yield
        finally:
            settling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await settling
            if subaccounts is not None:
                await subaccounts.aclose()
            await store.close()
            for each in opened:  # closing twice is harmless
                await each.close()

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
