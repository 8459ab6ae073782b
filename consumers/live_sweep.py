"""The sweep that keeps the index of businesses with live work true to the businesses'
own keys (``calls/live_businesses.py``).

The reconciler visits only the businesses in the index, and the index lives on the
work stream's slot, not the business's. Each note is written after its slot script and
before the stream entry is acknowledged. With tagged shards (``EVENT_STREAM_SHARDS`` >
1) the index and the stream share a slot, so a failover that loses the note loses the
later acknowledgement too (a primary replicates in order) and the entry is handled
again. Nothing ties them otherwise: on a cluster with the untagged layout (N = 1) the
index and the stream are on different slots, and an index entry may also go with more
than a primary's last writes, or by hand. The sweep is the backstop: without it such a
business's queued requests would wait for its next request, which may never come.

Each tick walks every primary a little further (``SCAN`` with a cursor kept between
ticks, one per primary) for the keys that mean work (``keys.LIVE_WORK``: a queue, a
slot member, a call queued or processing) and adds the businesses the index lacks. Its
cost per tick is bounded: one ``SCAN ... COUNT SCAN_COUNT`` per primary (Redis visits
about ``SCAN_COUNT`` keys), then one pipelined ``HSETNX`` per business found. A full
pass over a primary takes (its keys / ``SCAN_COUNT``) ticks; after a failover the new
primary's walk starts over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from calls import keys, live_businesses
from calls.redis_client import RedisClient, is_transient, primary_names, scan_primary
from calls.shards import ShardMap

log = logging.getLogger(__name__)

# Keys a SCAN visits per primary and tick: the bound on a tick's Redis work.
SCAN_COUNT = 1000


@dataclass
class SweepTick:
    """What one tick did (the tests check it; re-noted businesses are logged)."""

    primaries: int = 0  # primaries walked (one failing over is skipped)
    keys_found: int = 0
    renoted: list[str] = field(default_factory=list)
    passes_completed: int = 0  # primaries whose walk came back to cursor 0 this tick


class LiveSweep:
    """One worker's sweep; its cursors live in memory (a restarted worker starts over)."""

    def __init__(self, scan_count: int = SCAN_COUNT) -> None:
        self.scan_count = scan_count
        self.cursors: dict[str, int] = {}

    async def tick(self, redis: RedisClient, shards: ShardMap) -> SweepTick:
        result = SweepTick()
        primaries = primary_names(redis)
        # A primary gone (failed over, removed) takes its cursor with it: its keys are
        # walked from the start on whichever primary serves them now.
        self.cursors = {name: c for name, c in self.cursors.items() if name in primaries}
        found: set[str] = set()
        for name in primaries:
            try:
                cursor, matched = await scan_primary(
                    redis,
                    name,
                    self.cursors.get(name, 0),
                    match=keys.LIVE_WORK_MATCH,
                    count=self.scan_count,
                )
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # That primary is failing over: the others are walked, it is next tick.
                log.info("live sweep: primary %s unavailable (%s)", name, exc)
                continue
            self.cursors[name] = cursor
            result.primaries += 1
            if cursor == 0:
                result.passes_completed += 1
            for key in matched:
                b = keys.business_with_work(key)
                if b is not None:
                    result.keys_found += 1
                    found.add(b)
        result.renoted = await live_businesses.note_missing(redis, shards, sorted(found))
        for b in result.renoted:
            # The index had lost it: worth an operator's attention.
            log.warning("LIVE_BUSINESS_RENOTED business_id=%s", b)
        return result
