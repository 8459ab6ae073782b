"""Everything a request handler needs, built once at start-up and kept on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from calls.redis_client import RedisClient
from calls.registry import CallRegistry
from calls.shards import ShardMap
from config.settings import Settings
from ingest.shutdown import Stopping
from ingest.status_hub import StatusHub
from storage import RecordingStore
from tenants.accounts import AccountRegistry
from tenants.webhook_auth import WebhookAccounts


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    redis: RedisClient
    hub: StatusHub  # the one reader behind every open /api/events stream
    registry: CallRegistry
    shards: ShardMap  # where each business's events and counters go
    store: RecordingStore
    accounts: AccountRegistry  # businesses' own Twilio accounts
    webhook_accounts: WebhookAccounts  # which token signs a business's webhook
    stopping: Stopping = field(default_factory=Stopping)  # set on SIGTERM: streams end


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.callrec
    return state
