"""Shared fixtures: a real Redis server (embedded unless REDIS_URL is set), the Twilio
simulator on loopback, and factories for real web and worker processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from callrec.embedded_redis import EmbeddedRedis
from tests.stack import Stack


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    client.close()
    yield redis_server_url


@pytest.fixture
def sim() -> Iterator[object]:
    from twilio_sim import Simulator

    with Simulator() as simulator:
        yield simulator


@pytest.fixture
def stack(tmp_path: Path, redis_url: str, sim: object) -> Iterator[Stack]:
    from twilio_sim import Simulator

    assert isinstance(sim, Simulator)
    s = Stack(
        tmp=tmp_path,
        redis_url=redis_url,
        twilio_base=sim.base_url,
        account_sid=sim.account_sid,
        auth_token=sim.auth_token,
    )
    try:
        yield s
    finally:
        s.stop()
