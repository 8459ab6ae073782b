"""The lifecycle's worker loops: Twilio deletions that are due, backfills asked over the
admin API, backfill downloads fed to free slots, and retention. Each is bounded per tick
and safe in every worker at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from consumers.context import WorkerContext
from consumers.maintenance import run_every
from lifecycle.backfill_jobs import BackfillRunner
from lifecycle.backlog import BacklogFeeder
from lifecycle.erasure import Eraser
from lifecycle.retention import Retention
from lifecycle.twilio_deletes import TwilioDeleter
from lifecycle.twilio_rest import TwilioRest
from tenants.routing import AccountRoute

# Backfill downloads wait for free slots: look often, the script is cheap.
BACKLOG_INTERVAL_S = 0.5


def start_loops(ctx: WorkerContext, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    settings = ctx.settings
    # One REST client per (account, host, credentials, business): each request goes to the
    # business's own account (tenants.routing) under a permit of that account's cap.
    clients: dict[tuple[AccountRoute, str], TwilioRest] = {}

    async def client_for(b: str) -> TwilioRest:
        route = await ctx.router.route(b)
        client = clients.get((route, b))
        if client is None:
            client = TwilioRest(
                api_base=route.api_base,
                account_sid=route.account_sid,
                auth=route.auth,
                timeout_s=settings.worker.twilio_read_timeout_s,
                gate=lambda: ctx.permits.hold(route.account_sid, b),
            )
            clients[(route, b)] = client
        return client

    deleter = TwilioDeleter(
        ctx.redis,
        client_for,
        on_deleted=lambda b, _rsid, member: ctx.registry.twilio_copy_deleted(b, member),
    )
    feeder = BacklogFeeder(ctx.redis, ctx.settings.max_slots_per_business, ctx.shards)
    backfills = BackfillRunner(ctx.redis, ctx.registry, client_for)
    life = settings.lifecycle
    retention = Retention(
        ctx.redis,
        ctx.registry,
        Eraser(ctx.redis, ctx.registry, ctx.store),
        retention_days=life.retention_days,
        call_retention_days=life.call_retention_days,
        batch=life.retention_batch,
    )
    interval_s = life.lifecycle_interval_ms / 1000

    def loop(
        seconds: float, name: str, step: Callable[[], Awaitable[object]]
    ) -> asyncio.Task[None]:
        return asyncio.create_task(run_every(seconds, name, step, stop))

    async def closing() -> None:
        await stop.wait()
        for client in clients.values():
            await client.aclose()

    tasks = [
        loop(interval_s, "twilio-deletes", deleter.run_due),
        loop(BACKLOG_INTERVAL_S, "backlog", feeder.feed_all),
        loop(interval_s, "backfills", backfills.run_due),
        asyncio.create_task(closing()),
    ]
    if retention.enabled:
        tasks.append(loop(interval_s, "retention", retention.tick))
    return tasks
