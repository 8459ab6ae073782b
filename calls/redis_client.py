"""Every Redis client callrec opens, built in one place.

``REDIS_URL`` names one server or any node of a Redis Cluster / Valkey cluster; which one
is found out at start (``INFO cluster``), and the same code then runs on either client:
redis-py's :class:`~redis.asyncio.Redis` or its :class:`~redis.asyncio.cluster.RedisCluster`
(which follows MOVED and ASK, and retries TRYAGAIN and CLUSTERDOWN a few times itself).

What survives those few retries (a failover that takes longer, a slot migration in
progress) reaches the caller as one of :data:`TRANSIENT`: the callers treat it like a
connection error (retry later, leave the stream entry pending), never as fatal.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from calls.errors import RedisTlsError
from calls.redis_values import texts
from calls.waiting_cluster import WaitingRedisCluster
from config.settings import RedisPool, RedisTls, Settings

log = logging.getLogger(__name__)

RedisClient: TypeAlias = Redis | RedisCluster
RedisPipeline: TypeAlias = Pipeline | ClusterPipeline

# Who the client is for; each gets the pool and timeouts its use needs.
#   web      the web process: many concurrent requests, fail fast on connect (its
#            request client and its blocking SSE client differ by socket timeout)
#   worker   a worker's commands (scripts, acks, maintenance)
#   reader   blocking stream reads (XREADGROUP BLOCK): a socket timeout longer than any
#            block callrec asks for, so a quiet stream is not mistaken for a dead server
#   operator one-shot CLI commands
Purpose = Literal["web", "worker", "reader", "operator"]

# The longest BLOCK any callrec reader uses is well under this (consumers/worker.py,
# ingest/status_events.py).
READER_SOCKET_TIMEOUT_S = 30.0
PROBE_FIRST_S = 0.1
PROBE_MAX_S = 5.0

# Errors that mean "not now": the server or the cluster's layout is changing (a
# failover, a slot migration, a restart). redis-py wraps socket errors and timeouts in
# its own (its TimeoutError is not the builtin one), so a bare OSError is never Redis's:
# a disk error is not an outage.
TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,  # the cluster client's retries ran out ("TTL exhausted")
    ClusterDownError,  # CLUSTERDOWN, MASTERDOWN
    TryAgainError,  # TRYAGAIN: a multi-key command during a slot migration
    AskError,  # ASK / MOVED the client could not follow
    ReadOnlyError,  # a write reached a primary demoted by a failover
    RedisClusterException,  # no node covers the slot (yet), the layout is being read
)
# A script that touched a key it did not declare while its slot migrates (Valkey refuses
# any such key, Redis one already moved: "non local key"); scripts read every such key
# before their first write, so nothing was written and the caller retries later.
_TRANSIENT_REPLIES = (
    "undeclared keys were accessed during rehashing",
    "non local key",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MOVED",
    "ASK ",
    "READONLY",
)


def is_transient(exc: BaseException) -> bool:
    """Would the same command succeed later, once the server or the cluster settles?"""
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, AttributeError) and _raised_in_redis_connection(exc):
        return True
    return isinstance(exc, ResponseError) and any(r in str(exc) for r in _TRANSIENT_REPLIES)


NO_TLS = RedisTls(ca_file=None, verify=True)
# Handshake failures that are the server going away mid-handshake (a restart), not a
# certificate or protocol mismatch: those stay transient.
_SSL_GONE = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def tls_options(url: str, tls: RedisTls) -> dict[str, Any]:
    """redis-py's TLS arguments for ``url`` (none for ``redis://``)."""
    if not url.startswith("rediss://"):
        return {}
    options: dict[str, Any] = {
        "ssl_cert_reqs": "required" if tls.verify else "none",
        "ssl_check_hostname": tls.verify,
    }
    if tls.ca_file is not None:
        options["ssl_ca_certs"] = str(tls.ca_file)
    return options


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a redis-py connection error, if it is one waiting won't fix."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) and not isinstance(seen, _SSL_GONE):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _raised_in_redis_connection(exc: BaseException) -> bool:
    """redis-py's asyncio cluster client, when a failover makes it drop a node's
    connections while another task is still setting one of them up, raises
    AttributeError from inside that connection (its writer already gone). The
    connection is dead, not the caller's code: it counts as a connection error."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and last.replace("\\", "/").endswith(_REDIS_CONNECTION_FILE)


_REDIS_CONNECTION_FILE = "redis/asyncio/connection.py"


def _options(purpose: Purpose) -> dict[str, Any]:
    if purpose == "web":
        # A request's commands answer at once: a Redis that stops answering fails the
        # request fast (503) instead of holding it (redis-py 8's default; said, not assumed).
        return {"health_check_interval": 30, "socket_connect_timeout": 2, "socket_timeout": 5}
    if purpose == "worker":
        return {"health_check_interval": 30}
    if purpose == "reader":
        return {"health_check_interval": 30, "socket_timeout": READER_SOCKET_TIMEOUT_S}
    return {}


async def is_cluster(url: str, tls: RedisTls = NO_TLS) -> bool:
    """Does ``url`` name a node of a cluster? Asks the node (``INFO cluster``). A refused
    certificate is :class:`~calls.errors.RedisTlsError` (waiting will not fix it); an
    unreachable server one of :data:`TRANSIENT`."""
    probe = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, **tls_options(url, tls))
    try:
        info = await probe.info("cluster")
    except TRANSIENT as exc:
        refused = tls_failure(exc)
        if refused is not None:
            raise RedisTlsError(_tls_advice(url, tls, refused)) from exc
        raise
    finally:
        await probe.aclose()
    return int(info.get("cluster_enabled", 0)) == 1


async def detect_cluster(url: str, tls: RedisTls = NO_TLS) -> bool:
    """:func:`is_cluster`, waiting with backoff while the server is unreachable: a
    process started before its Redis (or during a restart) waits instead of exiting."""
    delay_s = PROBE_FIRST_S
    while True:
        try:
            return await is_cluster(url, tls)
        except TRANSIENT as exc:
            log.warning("redis unreachable (%s); retrying in %.1fs", exc, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, PROBE_MAX_S)


async def probe_cluster(url: str, tls: RedisTls = NO_TLS) -> bool | None:
    """:func:`is_cluster` asked once: None while the server is unreachable (a web serves
    503s meanwhile)."""
    try:
        return await is_cluster(url, tls)
    except TRANSIENT as exc:
        log.warning("redis unreachable at start (%s): serving 503s until it answers", exc)
        return None


def tls_advice(settings: Settings, refused: ssl.SSLError) -> str:
    """One line: why ``settings.redis_url``'s TLS handshake failed, and the fix."""
    assert settings.redis_url
    return _tls_advice(settings.redis_url, settings.redis_tls, refused)


def _tls_advice(url: str, tls: RedisTls, refused: ssl.SSLError) -> str:
    reason = getattr(refused, "verify_message", None) or refused.reason or str(refused)
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 6379}"  # never the password
    if isinstance(refused, ssl.SSLCertVerificationError):
        signer = (
            f"REDIS_TLS_CA_FILE {tls.ca_file} does not sign it"
            if tls.ca_file
            else "no CA the system trusts signs it"
        )
        return (
            f"Redis TLS certificate of {where} refused ({reason}): {signer};"
            " set REDIS_TLS_CA_FILE to its CA, or REDIS_TLS_VERIFY=false to accept it unchecked"
        )
    return f"Redis TLS handshake with {where} failed ({reason}): is it a TLS port?"


def client_for(
    url: str,
    *,
    cluster: bool,
    purpose: Purpose,
    tls: RedisTls = NO_TLS,
    pool: RedisPool | None = None,
    socket_timeout_s: float | None = None,
) -> RedisClient:
    """A client for ``url``, once it is known whether it names a cluster. With ``pool``,
    at most that many connections (per node, on a cluster), and on one server a command
    finding them all busy waits for one instead of failing at once; ``socket_timeout_s``
    overrides the purpose's socket timeout."""
    # Named, so that CLIENT LIST tells an operator whose connection is whose.
    options = {**_options(purpose), **tls_options(url, tls), "client_name": f"callrec-{purpose}"}
    if socket_timeout_s is not None:
        options["socket_timeout"] = socket_timeout_s
    if cluster:
        if pool is None:
            return RedisCluster.from_url(url, **options)
        # redis-py's asyncio cluster client has no waiting pool of its own.
        return WaitingRedisCluster.from_url(
            url, max_connections=pool.max_connections, pool_wait_s=pool.wait_s, **options
        )
    if pool is None:
        return Redis.from_url(url, **options)
    return Redis.from_pool(
        BlockingConnectionPool.from_url(
            url, max_connections=pool.max_connections, timeout=pool.wait_s, **options
        )
    )


async def connect(
    settings: Settings,
    *,
    purpose: Purpose,
    socket_timeout_s: float | None = None,
    wait: bool = True,
) -> RedisClient:
    """The client a ``purpose`` uses for ``settings.redis_url``, cluster or not;
    ``socket_timeout_s`` overrides the purpose's socket timeout (a blocking reader's must
    outlast its block). ``wait``: while Redis is unreachable, wait (a worker) rather than
    raise (a one-shot command)."""
    assert settings.redis_url
    url, tls = settings.redis_url, settings.redis_tls
    cluster = await detect_cluster(url, tls) if wait else await is_cluster(url, tls)
    return client_for(
        url,
        cluster=cluster,
        purpose=purpose,
        tls=tls,
        # The command pools are bounded; a reader's few blocking reads are bounded by
        # their callers (one per stream shard, one per web process's status hub).
        pool=settings.redis_pool if purpose in ("web", "worker") else None,
        socket_timeout_s=socket_timeout_s,
    )


def primary_names(redis: RedisClient) -> list[str]:
    """Every primary a walk of the whole key space must visit, by name: a cluster's
    primaries as the client knows them now (a failover changes them), or ``""`` for the
    one server."""
    if isinstance(redis, RedisCluster):
        return sorted(node.name for node in redis.get_primaries())
    return [""]


async def scan_primary(
    redis: RedisClient, name: str, cursor: int, *, match: str, count: int
) -> tuple[int, list[str]]:
    """One ``SCAN cursor MATCH match COUNT count`` on the primary ``name`` (from
    :func:`primary_names`): the next cursor (0 once the walk is complete) and the keys
    found. A primary gone since (a failover) answers a transient error."""
    if isinstance(redis, RedisCluster):
        node = redis.get_node(node_name=name)
        if node is None:
            raise RedisClusterException(f"no primary {name} any more")
        cursors, found = await redis.execute_command(
            "SCAN", cursor, "MATCH", match, "COUNT", count, target_nodes=node
        )
        return int(cursors[name]), texts(found)
    next_cursor, found = await redis.scan(cursor, match=match, count=count)
    return int(next_cursor), texts(found)
