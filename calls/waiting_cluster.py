"""A cluster client whose commands wait for a free connection instead of failing.

redis-py's asyncio :class:`~redis.asyncio.cluster.RedisCluster` keeps a pool per node
of at most ``max_connections`` and raises :class:`~redis.exceptions.MaxConnectionsError`
at once when a command finds it full: a burst of requests on the web would answer 503
while a few milliseconds of waiting would have served them (what the single-server
client does with its ``BlockingConnectionPool``).

:class:`WaitingRedisCluster` puts a gate in front: at most ``max_connections`` commands
(or pipelines) in flight at once across the client, each waiting up to ``wait_s`` for
its turn. A command or a pipeline holds at most one connection per node, so no node's
pool ever exceeds the gate's width, and the pool's own error cannot happen. What the
client does inside a command it already holds a turn for (a pipeline falling back to
single commands after a redirection, a command sent to several nodes at once) runs on
that turn: the gate is re-entrant per task (a context variable, inherited by the tasks
the client starts), so it never waits for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import MaxConnectionsError

_HOLDING: ContextVar[bool] = ContextVar("callrec_cluster_turn", default=False)


class CommandGate:
    """At most ``width`` turns at once; a turn waits up to ``wait_s`` for a free one."""

    def __init__(self, width: int, wait_s: float) -> None:
        self._turns = asyncio.Semaphore(width)
        self._wait_s = wait_s

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if _HOLDING.get():
            yield
            return
        if self._turns.locked():
            try:
                async with asyncio.timeout(self._wait_s):
                    await self._turns.acquire()
            except TimeoutError:
                # A ConnectionError: transient everywhere (a 503 on the web, a retry in
                # the worker), like the single-server pool's timeout.
                raise MaxConnectionsError(
                    f"no free Redis connection within {self._wait_s:g}s"
                ) from None
        else:
            await self._turns.acquire()
        holding = _HOLDING.set(True)
        try:
            yield
        finally:
            _HOLDING.reset(holding)
            self._turns.release()


class WaitingRedisCluster(RedisCluster):
    """:class:`RedisCluster` with a :class:`CommandGate` of ``max_connections`` turns."""

    def __init__(self, *, max_connections: int, pool_wait_s: float, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self.gate = CommandGate(max_connections, pool_wait_s)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.gate.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises, as redis-py does
        return _WaitingPipeline(self, transaction)


class _WaitingPipeline(ClusterPipeline):
    cluster_client: WaitingRedisCluster

    def __init__(self, client: WaitingRedisCluster, transaction: bool | None) -> None:
        super().__init__(client, transaction)
        # Declared by redis-py's command mixins, set by its clients but not by its
        # pipeline (which never dispatches events itself): the client's, for the typing.
        self._event_dispatcher = client._event_dispatcher

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        async with self.cluster_client.gate.turn():
            return await super().execute(raise_on_error, allow_redirections)
