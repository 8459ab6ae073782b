"""What every handler needs, built once by the worker's entry point."""

from __future__ import annotations

from dataclasses import dataclass

from calls.redis_client import RedisClient
from calls.registry import CallRegistry
from config.settings import Settings
from consumers.twilio_media import TwilioMedia
from semaphore import Slots
from storage import RecordingStore


@dataclass(frozen=True, slots=True)
class WorkerContext:
    settings: Settings
    redis: RedisClient
    slots: Slots
    registry: CallRegistry
    store: RecordingStore
    twilio: TwilioMedia
    consumer: str  # this worker's consumer name in the group
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
