"""What every handler needs, built once by the worker's entry point."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from calls.redis_client import RedisClient
from calls.registry import CallRegistry
from calls.shards import ShardMap
from calls.stats import PendingCounts
from config.settings import Settings
from consumers.twilio_media import TwilioMedia
from semaphore import Slots
from storage import RecordingStore
from tenants.permits import AccountPermits
from tenants.routing import AccountRouter


@dataclass(frozen=True, slots=True)
class WorkerContext:
    settings: Settings
    redis: RedisClient
    slots: Slots
    registry: CallRegistry
    store: RecordingStore
    twilio: TwilioMedia
    router: AccountRouter  # which account, host and credentials a business's requests use
    permits: AccountPermits  # the account-wide cap on requests in flight
    consumer: str  # this worker's consumer name in the group
    shards: ShardMap  # where each business's events, retries and counters go
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    # Twilio response counters, written with the next finishing pipeline or maintenance.
    counts: PendingCounts = field(default_factory=PendingCounts)
    # Held from a slot script call (request, release) to its RECORDING_* lines, so this
    # worker's log shows admissions in the order the scripts made them: finishing
    # downloads release concurrently, on separate connections, and could otherwise log
    # in either order.
    admission_order: asyncio.Lock = field(default_factory=asyncio.Lock)
