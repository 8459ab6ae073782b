"""When a process or container a test started is ready, and when the workers have
handled what was published, from states they create (an HTTP answer, consumers and
acknowledgements in the workers' group on Redis), never from their log text.

The functions taking a process return a predicate for ``tests.stack.wait_for`` that
raises with the process's output once the process has exited, so a start that failed
says why instead of timing out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx
import redis

from calls import keys
from calls.redis_values import text, texts
from tests.clients import SyncClient

Predicate = Callable[[], bool]


def answers(url: str, *, what: str, alive: Predicate, logs: Callable[[], str]) -> Predicate:
    """``url`` answers 200 (a health or probe path)."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            if not alive():
                raise AssertionError(f"{what} exited:\n{logs()}") from None
            return False

    return check


def group_consumers(client: SyncClient) -> dict[str, frozenset[str]]:
    """The consumer names in the workers' group of every registered event stream
    (``calls/shards.py``); a stream without the group yet has none."""
    found: dict[str, frozenset[str]] = {}
    for stream in sorted(texts(client.smembers(keys.EVENT_STREAMS))):
        try:
            infos = client.xinfo_consumers(stream, keys.EVENTS_GROUP)
        except redis.ResponseError:  # no stream or group yet
            infos = []
        found[stream] = frozenset(text(info["name"]) for info in infos)
    return found


def joined(
    client: SyncClient,
    *,
    what: str,
    alive: Predicate,
    logs: Callable[[], str],
    prefix: str = "",
    before: Mapping[str, frozenset[str]] | None = None,
) -> Predicate:
    """A worker reads every registered event stream: one consumer named ``prefix...``
    (a worker's ``hostname-pid-``) and absent ``before`` is in the group of each. A worker
    starts reading only once it has registered its shards and created their groups, and
    Redis adds a consumer to a group on its first XREADGROUP."""
    earlier = before or {}

    def check() -> bool:
        if not alive():
            raise AssertionError(f"{what} exited:\n{logs()}")
        streams = group_consumers(client)
        news = [
            {n for n in names - earlier.get(stream, frozenset()) if n.startswith(prefix)}
            for stream, names in streams.items()
        ]
        return bool(news) and all(news) and len(set.intersection(*news)) >= 1

    return check


def events_handled(client: SyncClient) -> bool:
    """Every entry of every registered event stream has been read by a worker and
    acknowledged (a handler acknowledges once it is done with the entry)."""
    for stream in texts(client.smembers(keys.EVENT_STREAMS)):
        try:
            [group] = [
                g for g in client.xinfo_groups(stream) if text(g["name"]) == keys.EVENTS_GROUP
            ]
            last_id = text(client.xinfo_stream(stream)["last-generated-id"])
        except (redis.ResponseError, ValueError):  # no stream or group yet
            return False
        if text(group["last-delivered-id"]) != last_id or int(group["pending"]) != 0:
            return False
    return True
