"""Loading Lua: each script's body behind the shared prelude (``lua/prelude.lua``), so
``set_state``, pruning, promotion and position announcements exist once, for the slot
scripts here and the registry's scripts in ``calls/lua``.

Scripts run as scripts (EVALSHA via ``register_script``), not Redis Functions: callrec
needs nothing a Redis-compatible service might not offer.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis.commands.core import AsyncScript

from calls.redis_client import RedisClient


def lua_text(package: str, name: str) -> str:
    return resources.files(package).joinpath("lua", name).read_text(encoding="utf-8")


@cache
def with_prelude(package: str, name: str) -> str:
    """The source registered for ``package``'s ``lua/<name>``: the prelude, then the body."""
    return lua_text("semaphore", "prelude.lua") + "\n" + lua_text(package, name)


def register(redis: RedisClient, package: str, name: str) -> AsyncScript:
    return redis.register_script(with_prelude(package, name))
