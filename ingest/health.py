"""Liveness and readiness.

``/healthz``: the process answers (never looks at Redis: a Redis outage must not restart
every web).

``/readyz``: can this web serve requests at all? Every web shares one Redis, so readiness
answers for the Redis as a whole, not for one business's part of it:

- one server: it answers PING;
- a cluster: some primary the client knows answers ``CLUSTER INFO`` with
  ``cluster_state:ok`` (the cluster serves its slots). A primary that is down or failing
  over does not make the web unready while the cluster still says ok: the businesses on
  the other primaries keep being served, and a request for one on the missing slots
  answers 503 with ``Retry-After`` by itself (ingest/errors.py). Not ready when no
  primary answers, or every one that does says the cluster is down (``cluster_state:
  fail``, e.g. a primary lost with no replica while ``cluster-require-full-coverage`` is
  on): then every command would be refused with CLUSTERDOWN anyway.

The primaries are asked at once, each on its own connection: a hung node cannot hold
the probe past ``CLUSTER_PROBE_S`` (under the readiness probe's 2 s timeout), and asking
them does not disturb the client's view of the cluster.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from calls.redis_client import RedisClient, is_transient
from ingest.state import app_state

CLUSTER_PROBE_S = 1.5
RETRY_AFTER_S = "5"


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    redis: str  # "ok", or why not


async def readiness(redis: RedisClient) -> Readiness:
    if isinstance(redis, RedisCluster):
        return await cluster_readiness(redis)
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        return Readiness(False, f"unreachable: {type(exc).__name__}")
    return Readiness(True, "ok")


async def cluster_readiness(redis: RedisCluster) -> Readiness:
    try:
        await redis.initialize()  # at once when the client has read the layout already
    except Exception as exc:
        if isinstance(exc, (RedisError, RedisClusterException, OSError)) or is_transient(exc):
            return Readiness(False, f"unreachable: {type(exc).__name__}")
        raise
    primaries = redis.get_primaries()
    asks = [asyncio.create_task(_cluster_state(node)) for node in primaries]
    answering = 0
    try:
        for finished in asyncio.as_completed(asks, timeout=CLUSTER_PROBE_S):
            try:
                state = await finished
            except TimeoutError:
                break
            if state is None:
                continue
            answering += 1
            if state == "ok":
                return Readiness(True, "ok")
    finally:
        for ask in asks:
            ask.cancel()
        await asyncio.gather(*asks, return_exceptions=True)
    if answering:
        return Readiness(False, f"cluster down: {answering} of {len(primaries)} primaries say fail")
    return Readiness(False, f"unreachable: none of {len(primaries)} primaries answered")


async def _cluster_state(node: ClusterNode) -> str | None:
    """The node's ``cluster_state``, or None when it does not answer."""
    try:
        info = await node.execute_command("CLUSTER INFO")
    except Exception as exc:
        if isinstance(exc, (RedisError, OSError)) or is_transient(exc):
            return None
        raise
    return str(info.get("cluster_state")) if isinstance(info, dict) else None


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> Response:
    verdict = await readiness(app_state(request).redis)
    body = {"ok": verdict.ready, "redis": verdict.redis}
    if not verdict.ready:
        return JSONResponse(body, status_code=503, headers={"Retry-After": RETRY_AFTER_S})
    return JSONResponse(body)
