"""``GET /api/events`` over real HTTP from a real web process: status changes in order
with queue positions, ``Last-Event-ID`` resume, per-business isolation, keep-alives, a
``resync`` after a trimmed gap, a stopping web process ending its streams, streams held
open past redis-py's socket timeout, and streams ending when their token expires."""

from __future__ import annotations

import signal
import time

import httpx
import redis

from calls import keys
from tests.helpers import play, register
from tests.sse_client import SseReader
from tests.stack import Stack, auth, token, wait_for
from twilio_sim import Fault, Simulator

B = "biz1"
C = "biz2"


def test_events_in_order_with_positions_resumable_and_private(stack: Stack, sim: Simulator) -> None:
    web = stack.start_web(PREFETCH_ON_WEBHOOK="false", SSE_KEEPALIVE_SECONDS="1")
    stack.start_worker()
    recs = [register(sim, web, B, i) for i in range(5)]
    theirs_rec = register(sim, web, C, 100)
    sim.set_faults(recs[4].recording_sid, [Fault.server_error(400)])  # not retried: failed
    assert httpx.get(f"{web}/api/events").status_code == 401
    mine = SseReader(f"{web}/api/events", auth(B))
    theirs = SseReader(f"{web}/api/events", auth(C))
    assert mine.status == theirs.status == 200

    sim.hold_media = True
    for rec in recs:  # in this order: FIFO
        assert play(web, B, rec.call_sid).status_code == 202

    def latest() -> dict[str, tuple[object, object]]:
        return {sid: seq[-1] for sid, seq in mine.by_sid().items()}

    wait_for(lambda: len(latest()) == 5, "an event for each of the five")
    assert sorted(latest().values(), key=str) == sorted(
        [("processing", None)] * 3 + [("queued", 1), ("queued", 2)], key=str
    )
    last = httpx.get(f"{web}/api/calls/{recs[4].call_sid}/recording/status", headers=auth(B))
    assert last.json()["position"] == 2
    last_ticket = int(last.headers["x-queue-ticket"])
    sim.hold_media = False
    wait_for(
        lambda: (
            [s for s, _ in latest().values()].count("ready") == 4
            and ("failed", None) in latest().values()
        ),
        "four ready and one failed",
    )
    got = mine.by_sid()
    sids = [r.call_sid for r in recs]
    assert {s: got[s] for s in sids} == {
        sids[0]: [("processing", None), ("ready", None)],
        sids[1]: [("processing", None), ("ready", None)],
        sids[2]: [("processing", None), ("ready", None)],
        sids[3]: [("queued", 1), ("processing", None), ("ready", None)],
        sids[4]: [("queued", 2), ("processing", None), ("failed", None)],
    }
    # Moving up is the page's arithmetic: the head's ticket, once sids[3] left the queue,
    # against sids[4]'s own ticket (X-Queue-Ticket) says it became first in line.
    heads = [e.json()["head"] for e in mine.events if e.event == "queue"]
    assert heads and isinstance(heads[0], int)
    assert last_ticket - heads[0] + 1 == 1
    ids = [e.id for e in mine.statuses()]
    assert all(ids) and ids == sorted(ids, key=lambda i: tuple(map(int, str(i).split("-"))))

    # Another business's stream carried none of it, but does carry its own.
    assert play(web, C, theirs_rec.call_sid).status_code == 202
    wait_for(lambda: ("ready", None) in theirs.by_sid().get(theirs_rec.call_sid, []), "C ready")
    assert set(theirs.by_sid()) == {theirs_rec.call_sid}
    assert theirs_rec.call_sid not in mine.by_sid()

    # Idle streams get keep-alive comments.
    wait_for(lambda: "keep-alive" in mine.comments, "a keep-alive comment")

    # Reconnecting with Last-Event-ID replays exactly what came after it.
    seen = mine.statuses()
    mine.close()
    theirs.close()
    resumed = SseReader(f"{web}/api/events", {**auth(B), "Last-Event-ID": str(seen[3].id)})
    wait_for(lambda: len(resumed.statuses()) >= len(seen) - 4, "the replay")
    assert resumed.statuses()[: len(seen) - 4] == seen[4:]
    resumed.close()


def test_resync_after_trim_bad_ids_and_streams_end_on_sigterm(stack: Stack, redis_url: str) -> None:
    web = stack.start_web(SSE_KEEPALIVE_SECONDS="3600")
    client = redis.Redis.from_url(redis_url)
    stream = keys.status_stream(B)
    sid = "CA" + "ab" * 16
    with client.pipeline(transaction=False) as pipe:
        for i in range(1200):
            pipe.xadd(stream, {"sid": sid, "status": "queued", "position": str(i)}, maxlen=1000)
        ids = pipe.execute()
    first, kept = ids[0].decode(), ids[-3].decode()
    assert client.xlen(stream) < 1200  # the cap trimmed the oldest

    trimmed = SseReader(f"{web}/api/events", {**auth(B), "Last-Event-ID": first})
    wait_for(lambda: len(trimmed.events) >= 1, "the first event")
    assert trimmed.events[0].event == "resync"
    trimmed.close()

    recent = SseReader(f"{web}/api/events", {**auth(B), "Last-Event-ID": kept})
    wait_for(lambda: len(recent.events) >= 2, "the replay")
    assert [e.event for e in recent.events] == ["status", "status"]
    assert [e.json()["position"] for e in recent.events] == [1198, 1199]
    recent.close()

    # Not a stream id, or out of Redis's range: treated as "from now on", never a 500.
    for bad in ("garbage", "99999999999999999999-0", "1-x"):
        reader = SseReader(f"{web}/api/events", {**auth(B), "Last-Event-ID": bad})
        assert reader.status == 200
        client.xadd(stream, {"sid": sid, "status": "ready", "position": ""})

        def arrived(r: SseReader = reader) -> bool:
            return len(r.events) >= 1

        wait_for(arrived, f"the new event after {bad}")
        assert [e.json()["status"] for e in reader.events] == ["ready"]
        reader.close()
    client.close()

    # A stopping web process ends its open streams instead of waiting on them forever
    # (uvicorn's graceful shutdown waits for every open response).
    proc = stack.procs[-1]
    open_stream = SseReader(f"{web}/api/events", auth(B))
    assert open_stream.status == 200
    proc.popen.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once it has shut down cleanly.
    assert proc.popen.wait(timeout=30) in (0, -signal.SIGTERM)
    assert open_stream.ended.wait(30)
    open_stream.close()


def test_a_stream_held_40s_gets_keepalives_and_events_and_stays_open(
    stack: Stack, redis_url: str
) -> None:
    # Longer than redis-py's default socket timeout (5 s) under every read: the stream
    # used to drop after 5 s, before its first keep-alive. A real wait, on purpose.
    web = stack.start_web(SSE_KEEPALIVE_SECONDS="15")
    client = redis.Redis.from_url(redis_url)
    stream = keys.status_stream(B)
    reader = SseReader(f"{web}/api/events", auth(B))
    assert reader.status == 200
    opened = time.monotonic()

    def event_at(after_s: float, status: str) -> None:
        time.sleep(max(0.0, opened + after_s - time.monotonic()))
        assert not reader.ended.is_set(), "the stream ended"
        client.xadd(stream, {"sid": "CA" + "ab" * 16, "status": status, "position": ""})

    wait_for(lambda: len(reader.comments) >= 2 or reader.ended.is_set(), "two keep-alives", 60)
    assert not reader.ended.is_set(), "the stream ended"
    assert reader.comments == ["keep-alive", "keep-alive"]
    event_at(35, "processing")
    wait_for(lambda: len(reader.statuses()) == 1 or reader.ended.is_set(), "the first event")
    event_at(40, "ready")
    wait_for(lambda: len(reader.statuses()) == 2 or reader.ended.is_set(), "the second event")
    assert [e.json()["status"] for e in reader.statuses()] == ["processing", "ready"]
    assert not reader.ended.is_set()
    reader.close()
    client.close()


def test_a_stream_ends_when_its_token_expires(stack: Stack, redis_url: str) -> None:
    web = stack.start_web(SSE_KEEPALIVE_SECONDS="1")
    # An hour between keep-alives: the blocking read itself must end at exp.
    idle_web = stack.start_web(SSE_KEEPALIVE_SECONDS="3600")
    short = token(B, ttl_s=3)
    bearer = {"Authorization": f"Bearer {short}"}
    expiring = SseReader(f"{web}/api/events", bearer)
    idle = SseReader(f"{idle_web}/api/events", bearer)
    lasting = SseReader(f"{web}/api/events", auth(B))
    assert expiring.status == idle.status == lasting.status == 200
    client = redis.Redis.from_url(redis_url)
    client.xadd(keys.status_stream(B), {"sid": "CA" + "ab" * 16, "status": "queued"})
    wait_for(lambda: len(expiring.statuses()) == 1, "the event before expiry")

    def refused_by(base_url: str) -> bool:
        """The server itself now refuses the token (a stream ending for any other
        reason, e.g. a read timing out, would end while it still accepts it)."""
        with httpx.stream("GET", f"{base_url}/api/events", headers=bearer) as answer:
            return answer.status_code == 401

    wait_for(expiring.ended.is_set, "the stream to end at the token's exp")
    assert refused_by(web)  # ended because its token expired, not before
    assert "keep-alive" in expiring.comments  # it stayed open meanwhile
    wait_for(idle.ended.is_set, "the idle stream to end at the token's exp")
    assert refused_by(idle_web)
    assert len(idle.statuses()) == 1 and idle.comments == []
    # A valid token's stream on the same process goes on.
    client.xadd(keys.status_stream(B), {"sid": "CA" + "ab" * 16, "status": "ready"})
    wait_for(lambda: len(lasting.statuses()) == 2, "both events on the lasting stream")
    assert not lasting.ended.is_set()
    expiring.close()
    idle.close()
    lasting.close()
    client.close()
