"""Test-side Redis clients for a URL that names one server or a cluster node: the tests
check the same keys either way."""

from __future__ import annotations

from typing import Any, TypeAlias

import pytest
import redis
from redis.cluster import RedisCluster

from calls.redis_client import NO_TLS, RedisClient, client_for, tls_options
from config.settings import RedisTls

SyncClient: TypeAlias = redis.Redis | RedisCluster

# Tests that must hold on a cluster too (the conftest's redis_url fixture reads the kind).
REDIS_KINDS = ("server", "cluster")
on_server_and_cluster = pytest.mark.parametrize("redis_url", REDIS_KINDS, indirect=True)


def is_cluster(url: str, **options: Any) -> bool:
    probe = redis.Redis.from_url(url, socket_connect_timeout=2, **options)
    try:
        return int(probe.info("cluster").get("cluster_enabled", 0)) == 1
    finally:
        probe.close()


def sync_redis(url: str, tls: RedisTls = NO_TLS) -> SyncClient:
    """A client for ``url``; ``tls``: how a ``rediss://`` server's certificate is checked."""
    options = tls_options(url, tls)
    if is_cluster(url, **options):
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def async_redis(url: str) -> RedisClient:
    return client_for(url, cluster=is_cluster(url), purpose="operator")
