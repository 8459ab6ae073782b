"""Operator views: ``callrec status`` and ``callrec dead-letters``."""

from __future__ import annotations

from redis.exceptions import ResponseError

from calls import keys, live_businesses, shards
from calls.redis_client import RedisClient, connect
from calls.redis_values import texts
from config.settings import Settings
from consumers.dead_letters import list_dead_letters, requeue_dead_letter
from tenants.accounts import AccountRegistry
from tenants.permits import usage


async def _connect(settings: Settings) -> RedisClient:
    return await connect(settings, purpose="operator", wait=False)


async def print_status(settings: Settings, business: str | None) -> int:
    redis = await _connect(settings)
    try:
        registered = await shards.registered(redis, shards.ShardMap(settings.event_stream_shards))
        if business:
            businesses = [business]
        else:
            # Businesses with work (slots, queue, pending calls); name one to see it anyway.
            found: set[str] = set()
            for shard in registered:
                found |= set(await live_businesses.generations(redis, shard.live))
            businesses = sorted(found)
        print(f"{'business':<20} {'slots':>7} {'queued':>7}  leases (sid: ms left)")
        for b in businesses:
            members = sorted(texts(await redis.smembers(keys.slots(b))))
            leases = []
            for sid in members:
                ttl = await redis.pttl(keys.inflight(b, sid))
                leases.append(f"{sid}: {ttl if ttl >= 0 else 'gone'}")
            qlen = await redis.llen(keys.queue(b))
            print(
                f"{b:<20} {len(members):>3}/{settings.max_slots_per_business:<3} {qlen:>7}  "
                + (", ".join(leases) or "-")
            )
        await _print_accounts(redis, settings)
        for shard in registered:
            try:
                summary = await redis.xpending(shard.events, keys.EVENTS_GROUP)
                pending = summary["pending"]
            except ResponseError:
                pending = 0
            length = await redis.exists(shard.events) and await redis.xlen(shard.events)
            print(
                f"event stream {shard.events}: {length} entries, {pending} pending; "
                f"retries waiting: {await redis.zcard(shard.delayed)}"
            )
        print(f"dead letters: {await redis.xlen(keys.DEAD_LETTERS)}")
    finally:
        await redis.aclose()
    return 0


async def _print_accounts(redis: RedisClient, settings: Settings) -> None:
    """Twilio accounts: permits in flight against the effective limit, 429s; and which
    businesses have an account of their own (no secret is read or shown)."""
    max_per_account = settings.twilio.max_concurrent_per_account
    accounts = await usage(redis, max_per_account)
    print(f"\n{'twilio account':<36} {'permits':>9} {'429s':>7}")
    for a in accounts:
        print(f"{a.account_sid:<36} {a.in_use:>4}/{a.limit:<4} {a.throttled:>7}")
    if not accounts:
        print("(no requests to Twilio yet)")
    registry = AccountRegistry(redis, None)
    own = await registry.businesses()
    main = settings.twilio.account_sid or "(TWILIO_ACCOUNT_SID unset)"
    print(f"main account {main}; {len(own)} businesses with their own account")
    for b in own:
        described = await registry.describe(b)
        if described is not None:
            region = described["region"] or "us1"
            print(f"  {b:<20} {described['account_sid']} region={region}")
    print()


async def dead_letters(settings: Settings, *, requeue: bool, entry_id: str | None) -> int:
    redis = await _connect(settings)
    try:
        letters = await list_dead_letters(redis, count=1000)
        if entry_id:
            letters = [d for d in letters if d.id == entry_id]
        for d in letters:
            print(
                f"{d.id} business_id={d.business_id} sid={d.sid} kind={d.kind} "
                f"attempts={d.attempts} reason={d.reason!r}"
            )
            if requeue and d.sid:
                await requeue_dead_letter(redis, shards.ShardMap(settings.event_stream_shards), d)
                print(f"  requeued {d.sid}")
        if not letters:
            print("no dead letters")
    finally:
        await redis.aclose()
    return 0
