"""What every handler needs, built once by the worker's entry point."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from calls.registry import CallRegistry
from config.settings import Settings
from consumers.twilio_media import TwilioMedia
from semaphore import Slots
from storage import RecordingStore
from tenants.permits import AccountPermits
from tenants.routing import AccountRouter


@dataclass(frozen=True, slots=True)
class WorkerContext:
    settings: Settings
    redis: Redis
    slots: Slots
    registry: CallRegistry
    store: RecordingStore
    twilio: TwilioMedia
    router: AccountRouter  # which account, host and credentials a business's requests use
    permits: AccountPermits  # the account-wide cap on requests in flight
    consumer: str  # this worker's consumer name in the group
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
