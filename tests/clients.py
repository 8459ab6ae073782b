"""Test-side Redis clients for a URL that names one server or a cluster node: the tests
check the same keys either way."""

from __future__ import annotations

from typing import TypeAlias

import pytest
import redis
from redis.cluster import RedisCluster

from calls.redis_client import RedisClient, client_for

SyncClient: TypeAlias = redis.Redis | RedisCluster

# Tests that must hold on a cluster too (the conftest's redis_url fixture reads the kind).
REDIS_KINDS = ("server", "cluster")
on_server_and_cluster = pytest.mark.parametrize("redis_url", REDIS_KINDS, indirect=True)


def is_cluster(url: str) -> bool:
    probe = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        return int(probe.info("cluster").get("cluster_enabled", 0)) == 1
    finally:
        probe.close()


def sync_redis(url: str) -> SyncClient:
    if is_cluster(url):
        return RedisCluster.from_url(url)
    return redis.Redis.from_url(url)


def async_redis(url: str) -> RedisClient:
    return client_for(url, cluster=is_cluster(url), purpose="operator")
