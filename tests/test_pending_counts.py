"""Twilio response counters kept in memory reach a shard's stats hash (here the one
shard's, ``rec_stats``) with the next pipeline that goes anyway, or with a flush
(calls/stats.py)."""

from __future__ import annotations

from redis.asyncio import Redis

from calls.keys import STATS
from calls.stats import PendingCounts, twilio_field


async def test_counts_ride_a_pipeline_or_a_flush(redis: Redis) -> None:
    counts = PendingCounts()
    counts.add(twilio_field("200"))
    counts.add(twilio_field("200"))
    counts.add(twilio_field("429"))
    assert await redis.hget(STATS, twilio_field("200")) is None  # nothing sent yet
    async with redis.pipeline(transaction=False) as pipe:
        counts.drain_into(pipe, STATS)
        await pipe.execute()
    assert await redis.hmget(STATS, [twilio_field("200"), twilio_field("429")]) == [b"2", b"1"]
    counts.add(twilio_field("200"))
    await counts.flush(redis, STATS)
    await counts.flush(redis, STATS)  # drained: adds nothing twice
    assert await redis.hget(STATS, twilio_field("200")) == b"3"
