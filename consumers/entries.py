"""What makes a stream entry an event a worker can act on, and what is remembered about
an entry whose handling failed.

An entry that can never be valid (not an event, a SID that is not a Call SID) is the
entry's fault for good: the worker dead-letters it at once. An entry whose handling
raised stays pending and is tried again; the last error is kept in Redis so that the
dead letter written after the delivery limit says why, whichever worker writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from calls import keys, sids
from calls.errors import BadRequest
from calls.events import Event
from calls.redis_client import RedisClient
from calls.redis_values import text
from semaphore.slots import Outcome

# Long enough to outlive every redelivery before the delivery limit; the key only
# serves the dead letter, so an entry handled in the end leaves it to expire.
ENTRY_ERROR_TTL_S = 24 * 3600
REASON_MAX_CHARS = 300
OUTCOMES = frozenset(get_args(Outcome))


class InvalidEntry(ValueError):
    """A stream entry no handler can ever act on; ``str()`` says why."""


def parse_entry(fields: Mapping[Any, Any]) -> Event:
    """The event ``fields`` stand for; raises :class:`InvalidEntry` when they cannot be one."""
    try:
        event = Event.parse(fields)
        sids.business_id(event.business_id)
        sids.slot_member(event.sid, what="sid")
    except BadRequest as exc:
        raise InvalidEntry(exc.detail) from exc
    except ValueError as exc:  # not an event, a bad delay_ms, bytes that are not UTF-8
        raise InvalidEntry(_bounded(str(exc))) from exc
    if event.kind == "done" and event.outcome and event.outcome not in OUTCOMES:
        raise InvalidEntry(f"outcome must be one of {sorted(OUTCOMES)}")
    return event


def describe(exc: BaseException) -> str:
    """One line naming an error, for logs and dead letters."""
    return _bounded(f"{type(exc).__name__}: {exc}")


def describe_fields(fields: Mapping[Any, Any]) -> str:
    """The raw fields of an entry, bounded, for a dead letter an operator reads."""
    return _bounded(repr(dict(fields)))


def _bounded(reason: str) -> str:
    return reason if len(reason) <= REASON_MAX_CHARS else reason[: REASON_MAX_CHARS - 3] + "..."


async def note_failure(redis: RedisClient, stream: str, entry_id: str, reason: str) -> None:
    await redis.set(keys.entry_error(stream, entry_id), reason, ex=ENTRY_ERROR_TTL_S)


async def last_failure(redis: RedisClient, stream: str, entry_id: str) -> str | None:
    raw = await redis.get(keys.entry_error(stream, entry_id))
    return None if raw is None else text(raw)


async def forget_failure(redis: RedisClient, stream: str, entry_id: str) -> None:
    await redis.delete(keys.entry_error(stream, entry_id))
