"""Fixtures for tests of callrec's Twilio REST client against the simulator; a test module
asks for them with ``pytest_plugins = ["tests.twilio_rest_kit"]``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from lifecycle.twilio_rest import TwilioRest
from twilio_sim import Simulator


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator() as sim:
        yield sim


@pytest.fixture
async def twilio(simulator: Simulator) -> AsyncIterator[TwilioRest]:
    """A client of the simulator's main account."""
    async with TwilioRest(
        api_base=simulator.base_url,
        account_sid=simulator.account_sid,
        auth_token=simulator.auth_token,
    ) as client:
        yield client
