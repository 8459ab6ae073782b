"""Registering the registry's Lua scripts behind the shared ``set_state``."""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def lua_text(name: str) -> str:
    return resources.files("calls").joinpath("lua", name).read_text(encoding="utf-8")


@cache
def with_state(name: str) -> str:
    return lua_text("state_shim.lua") + "\n" + lua_text(name)


def register(redis: Redis, name: str) -> AsyncScript:
    return redis.register_script(with_state(name))
