"""Loading Lua: each script's body behind the shared prelude (``lua/prelude.lua``), so
``set_state``, pruning, promotion and position announcements exist once, for the slot
scripts here and the registry's scripts in ``calls/lua``.

Scripts run as scripts (EVALSHA, loaded on first use), not Redis Functions: callrec
needs nothing a Redis-compatible service might not offer.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from calls.redis_client import RedisClient, RedisPipeline


def lua_text(package: str, name: str) -> str:
    return resources.files(package).joinpath("lua", name).read_text(encoding="utf-8")


@cache
def with_prelude(package: str, name: str) -> str:
    """The source registered for ``package``'s ``lua/<name>``: the prelude, then the body."""
    return lua_text("semaphore", "prelude.lua") + "\n" + lua_text(package, name)


class Script:
    """One Lua script, run with EVALSHA and loaded when a server does not know it (a new
    server, a restart, a replica promoted by a failover: scripts are not replicated).

    redis-py's ``register_script`` does the same, but every caller that meets NOSCRIPT
    at once sends its own SCRIPT LOAD, which on a cluster goes to every primary; many
    at once trip a race in the async cluster client's connection setup. Here one load
    per process runs at a time and the others wait for it."""

    def __init__(self, redis: RedisClient, source: str) -> None:
        self._redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._loading = asyncio.Lock()
        self._loaded = False  # by this process, for pipelines (see __call__)

    async def __call__(
        self,
        *,
        keys: Sequence[str],
        args: Sequence[Any] = (),
        client: RedisPipeline | None = None,
    ) -> Any:
        """Run the script, or with ``client`` (a pipeline) queue it there: the script is
        loaded first, as a pipeline cannot load it when it meets NOSCRIPT."""
        if client is not None:
            if not self._loaded:
                async with self._loading:
                    await self._redis.script_load(self.source)
                self._loaded = True
            # Not ``client.evalsha``: redis-py's cluster pipeline refuses that method,
            # though it routes the command by its keys like any other.
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await self._redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            async with self._loading:
                await self._redis.script_load(self.source)
            return await self._redis.evalsha(self.sha, len(keys), *keys, *args)


def register(redis: RedisClient, package: str, name: str) -> Script:
    """``package``'s ``lua/<name>`` behind the prelude."""
    return Script(redis, with_prelude(package, name))


def plain(redis: RedisClient, package: str, name: str) -> Script:
    """``package``'s ``lua/<name>`` on its own (it needs nothing from the prelude)."""
    return Script(redis, lua_text(package, name))
