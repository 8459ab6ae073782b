"""Everything a request handler needs, built once at start-up and kept on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request
from twilio.request_validator import RequestValidator

from calls.redis_client import RedisClient
from calls.registry import CallRegistry
from config.settings import Settings
from ingest.shutdown import Stopping
from ingest.status_hub import StatusHub
from storage import RecordingStore


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    redis: RedisClient
    hub: StatusHub  # the one reader behind every open /api/events stream
    registry: CallRegistry
    store: RecordingStore
    validator: RequestValidator | None  # None when TWILIO_AUTH_TOKEN is unset
    stopping: Stopping = field(default_factory=Stopping)  # set on SIGTERM: streams end


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.callrec
    return state
