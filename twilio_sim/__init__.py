"""A real-HTTP Twilio stand-in (REST media + listing, signed CDN, signed webhooks)."""

from twilio_sim.history import SimCall, past_calls
from twilio_sim.models import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    Fault,
    SimRecording,
    demo_recordings,
    media_bytes,
)
from twilio_sim.simulator import Simulator

__all__ = [
    "DEMO_ACCOUNT_SID",
    "DEMO_AUTH_TOKEN",
    "Fault",
    "SimCall",
    "SimRecording",
    "Simulator",
    "demo_recordings",
    "media_bytes",
    "past_calls",
]
