"""Which business a Twilio SID (call or recording) belongs to: the first one that
registered it. Storage is keyed by SID, so without this a correctly signed callback on
business A's URL carrying business B's CallSid would let A's users play B's recording.

Each claim is a single-key ``SET NX`` on ``rec_owner:<sid>`` (untagged, fine on a
cluster: no claim spans two keys atomically)."""

from __future__ import annotations

from calls import keys
from calls.redis_client import RedisClient
from calls.redis_values import text


async def claim(redis: RedisClient, b: str, *sids: str) -> bool:
    """Claim every SID for ``b``; True when each one is ``b``'s (new or already). A
    partial claim (one SID new, another foreign) keeps the new one: it is ``b``'s either
    way, as no other business registered it first."""
    wanted = [sid for sid in sids if sid]
    if not wanted:
        return True
    async with redis.pipeline(transaction=False) as pipe:
        for sid in wanted:
            pipe.set(keys.owner(sid), b, nx=True)
            pipe.get(keys.owner(sid))
        replies = await pipe.execute()
    owners = [text(v) for v in replies[1::2]]
    return all(owner == b for owner in owners)


async def owner_of(redis: RedisClient, sid: str) -> str | None:
    value = await redis.get(keys.owner(sid))
    return None if value is None else text(value)
