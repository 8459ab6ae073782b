"""``GET /api/events`` over real HTTP from a real web process: status changes in order
with queue positions, ``Last-Event-ID`` resume, per-business isolation, keep-alives, a
``resync`` after a trimmed gap, and a stopping web process ending its streams."""

from __future__ import annotations

import signal

import httpx
import redis

from calls import keys
from tests.helpers import play, register
from tests.sse_client import SseReader
from tests.stack import Stack, auth, wait_for
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
    assert heads and last_ticket - heads[0] + 1 == 1
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
        wait_for(lambda r=reader: len(r.events) >= 1, f"the new event after {bad}")
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
