"""The connection budget, on a real web process: 2,000 open ``/api/events`` streams hold
a handful of Redis connections (counted with CLIENT LIST), another tenant's play still
answers, a status change reaches every stream of its business and none of another's,
and past the caps a new stream is a 429."""

from __future__ import annotations

from collections import Counter

import httpx
import redis

from calls import keys
from calls.redis_values import text
from tests.helpers import play_until_stored, register
from tests.many_streams import ManyStreams, OpenStream
from tests.stack import Stack, auth, wait_for
from twilio_sim import Simulator

CROWD = "crowd"  # one business with many open tabs
SMALL = [f"b{i:03d}" for i in range(100)]  # and many with a few each
CROWD_STREAMS = 1000
SMALL_STREAMS = 10  # each: 1,000 + 100 x 10 = 2,000 streams
POOL_MAX = 8  # REDIS_MAX_CONNECTIONS of the web under test
MARKER_SID = "CA" + "f" * 32


def _callrec_connections(client: redis.Redis) -> Counter[str]:
    """Open connections by client name (callrec names each ``callrec-<purpose>``)."""
    names = [text(c.get("name", "")) for c in client.client_list()]
    return Counter(n for n in names if n.startswith("callrec-"))


def _mark(client: redis.Redis, business: str) -> None:
    client.xadd(keys.status_stream(business), {"sid": MARKER_SID, "status": "marker"})


def _until_marker(stream: OpenStream) -> list[tuple[str, str]]:
    seen = stream.statuses()
    return seen[: seen.index((MARKER_SID, "marker"))] if (MARKER_SID, "marker") in seen else []


def _all_marked(streams: list[OpenStream]) -> bool:
    return all((MARKER_SID, "marker") in s.statuses() or s.ended for s in streams)


def test_two_thousand_streams_on_one_web_hold_a_handful_of_connections(
    stack: Stack, sim: Simulator, redis_url: str
) -> None:
    web = stack.start_web(
        PREFETCH_ON_WEBHOOK="false",
        SSE_MAX_STREAMS=str(CROWD_STREAMS + len(SMALL) * SMALL_STREAMS),
        SSE_MAX_STREAMS_PER_BUSINESS=str(CROWD_STREAMS),
        SSE_KEEPALIVE_SECONDS="30",
        REDIS_MAX_CONNECTIONS=str(POOL_MAX),
    )
    client = redis.Redis.from_url(redis_url)
    many = ManyStreams(web)
    try:
        # 50 opening at once on a pool of 8: the pool waits, no request fails.
        assert set(many.open(CROWD, CROWD_STREAMS)) == {200}
        for b in SMALL:
            assert set(many.open(b, SMALL_STREAMS)) == {200}
        assert len(many.streams) == 2000

        # Every stream is open on one web process, which holds its one reader and at
        # most its pool's connections (none of them per stream).
        web_connections = _callrec_connections(client)
        assert web_connections["callrec-reader"] == 1, web_connections
        assert web_connections["callrec-web"] <= POOL_MAX, web_connections
        assert sum(web_connections.values()) <= POOL_MAX + 1

        # Past the caps: a 429 that says which cap, and the open streams are untouched.
        crowd_more = httpx.get(f"{web}/api/events", headers=auth(CROWD), timeout=30)
        assert crowd_more.status_code == 429
        assert "for this business" in crowd_more.json()["error"]
        assert int(crowd_more.headers["retry-after"]) > 0
        newcomer = httpx.get(f"{web}/api/events", headers=auth("newcomer"), timeout=30)
        assert newcomer.status_code == 429
        assert "on this web process" in newcomer.json()["error"]

        # Another tenant's play answers while every stream is open; its status changes
        # reach each of its own streams.
        stack.start_worker()
        other = register(sim, web, SMALL[0], 2)
        assert play_until_stored(web, SMALL[0], other.call_sid).status_code == 200
        mine = many.of(SMALL[0])
        wait_for(
            lambda: all((other.call_sid, "ready") in s.statuses() for s in mine),
            "ready on every stream of the playing business",
            120,
        )
        crowd_rec = register(sim, web, CROWD, 1)
        assert play_until_stored(web, CROWD, crowd_rec.call_sid).status_code == 200
        crowd = many.of(CROWD)
        wait_for(
            lambda: all((crowd_rec.call_sid, "ready") in s.statuses() for s in crowd),
            "ready on every crowd stream",
            120,
        )
        # No stream saw another business's events: each business's marker comes after
        # whatever was delivered to it, so a stray event would sit in front of it.
        for b in [CROWD, *SMALL]:
            _mark(client, b)
        wait_for(lambda: _all_marked(many.streams), "the markers on every stream", 120)
        assert not [s for s in many.streams if s.ended]
        for stream in many.streams:
            own = {crowd_rec.call_sid} if stream.business == CROWD else set()
            if stream.business == SMALL[0]:
                own = {other.call_sid}
            assert {sid for sid, _ in _until_marker(stream)} <= own, stream.business
        assert all(_until_marker(s) for s in crowd)  # the crowd saw its own play
        # The worker joined; the web's count did not grow with the plays.
        after = _callrec_connections(client)
        print(f"redis connections by name, 2,000 streams open and a worker: {dict(after)}")
        assert after["callrec-web"] <= POOL_MAX
    finally:
        many.close()
        client.close()
