"""Shared fixtures: a real Redis server (embedded unless REDIS_URL is set), the Twilio
simulator on loopback, and factories for real web and worker processes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from callrec.embedded_cluster import EmbeddedCluster
from callrec.embedded_redis import EmbeddedRedis
from calls.redis_client import RedisClient
from tests import clients
from tests.containers import containers, images
from tests.stack import Stack

__all__ = ["containers", "images"]  # fixtures of tests/containers.py, for every test file


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Container tests last: `make test` builds their images in the background meanwhile,
    and the ``images`` fixture waits for that build (tests/images.py's lock)."""
    items.sort(key=lambda item: item.get_closest_marker("containers") is not None)


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def server_url(redis_server_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    client.close()
    yield redis_server_url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[EmbeddedCluster]:
    """3 primaries with a replica each, shared by the session (started on first use)."""
    with EmbeddedCluster(primaries=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: EmbeddedCluster) -> str:
    """The shared cluster, every primary flushed (and healed, if a test failed one over)."""
    redis_cluster.wait_healthy()
    for node in redis_cluster.primary_nodes():
        with redis_cluster.client(node) as client:
            client.flushall()
    return redis_cluster.url


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """A fresh Redis: the session's server, or the cluster for tests marked
    ``tests.clients.on_server_and_cluster``."""
    kind = getattr(request, "param", "server")
    url = request.getfixturevalue("cluster_url" if kind == "cluster" else "server_url")
    assert isinstance(url, str)
    return url


@pytest.fixture(name="redis")
async def async_redis(redis_url: str) -> AsyncIterator[RedisClient]:
    """An asyncio client on the freshly flushed test server (or cluster)."""
    client = clients.async_redis(redis_url)
    yield client
    await _cancel_stray_tasks()
    await client.aclose()


async def _cancel_stray_tasks() -> None:
    """Cancel what a test left running on its loop (a download a handler started, say)
    before the client closes: a task still holding or taking a connection when the loop
    closes leaves an unclosed socket, which a later test's setup reports as an error."""
    current = asyncio.current_task()
    stray = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in stray:
        task.cancel()
    await asyncio.gather(*stray, return_exceptions=True)


@pytest.fixture
def sim() -> Iterator[object]:
    from twilio_sim import Simulator

    with Simulator() as simulator:
        yield simulator


@pytest.fixture
def stack(tmp_path: Path, redis_url: str, sim: object) -> Iterator[Stack]:
    from twilio_sim import Simulator

    assert isinstance(sim, Simulator)
    s = Stack.around(sim, tmp=tmp_path, redis_url=redis_url)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """moto's standalone S3 server on loopback, shared by the session; tests isolate
    themselves with a bucket each (``s3_bucket``)."""
    from callrec.local_s3 import LocalS3

    with LocalS3(log_path=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def s3_bucket(local_s3: object, request: pytest.FixtureRequest) -> str:
    from callrec.local_s3 import LocalS3

    assert isinstance(local_s3, LocalS3)
    slug = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    name = f"t-{slug[:50].strip('-')}-b"  # 3-63 chars, ends with a letter
    local_s3.create_bucket(name)
    return name
