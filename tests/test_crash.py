"""Crash safety with real processes: kill -9 mid-download, SIGTERM drain and hand-back,
the reconciler repairing what lost events left behind, and stale stream entries."""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
import signal

import httpx

from calls import keys, live_businesses
from calls.events import Event, publish
from calls.shards import ShardMap
from consumers.__main__ import EXIT_DRAINED, EXIT_HANDED_BACK
from consumers.worker import READ_BLOCK_MS
from semaphore import Slots
from tests import crash_trials
from tests.clients import SyncClient, async_redis, on_server_and_cluster, sync_redis
from tests.flocks import consumer_idle_ms, flock_state, lock_path
from tests.helpers import play, play_until_stored, register
from tests.stack import Stack, auth, wait_for
from tests.test_faults import cli, has_status, status_of
from twilio_sim import Simulator, media_bytes

# Crash safety holds on one server and on a 3-primary cluster alike (guarantee 10).
pytestmark = on_server_and_cluster


def no_slots_held(client: SyncClient, b: str) -> bool:
    return client.scard(keys.slots(b)) == 0


def test_worker_killed_mid_download_loses_nothing_and_tears_nothing(
    stack: Stack, sim: Simulator
) -> None:
    web = crash_trials.prepare(stack, sim)
    totals = crash_trials.Totals()
    rng = random.Random(3)
    for n in range(3):
        crash_trials.run_trial(stack, sim, web, totals, n=n, rng=rng)
    print(totals.summary())
    assert totals.trials == 3 and totals.requests == 9
    assert totals.interrupted >= 3  # every trial really cut a download short
    assert totals.lost == 0
    assert totals.torn == 0
    assert totals.duplicated == 0
    assert totals.asked_again_once_stored == 0
    r = sync_redis(stack.redis_url)
    for n in range(3):
        wait_for(functools.partial(no_slots_held, r, f"crash{n}"), "slots back to 0")
    r.close()
    # The dead workers' temp files never show under a canonical name.
    assert all(p.name.endswith(".mp3") for p in stack.recordings_dir.glob("CA*"))


def test_sigterm_drains_in_flight_downloads_then_hands_back_the_rest(
    stack: Stack, sim: Simulator
) -> None:
    stack.env_overrides.update(PREFETCH_ON_WEBHOOK="false")
    web = stack.start_web()
    sim.chunk_size = 16 * 1024
    sim.chunk_delay_s = 0.3
    slow = register(sim, web, "term", 500, size_bytes=160 * 1024)  # about 3 s of body
    late = register(sim, web, "term", 501, size_bytes=160 * 1024)
    patient = stack.start_worker(SHUTDOWN_GRACE_SECONDS="30")
    play(web, "term", slow.call_sid)
    wait_for(lambda: sim.downloads(slow.recording_sid) == 1, "slow body to start")
    # While it runs, the operator sees the slot, its lease and the queue.
    shown = cli(stack, "status", "--business", "term")
    assert re.search(rf"^term\s+1/3\s+0\s+{slow.call_sid}: \d+$", shown.stdout, re.M), shown.stdout
    patient.popen.send_signal(signal.SIGTERM)
    r = sync_redis(stack.redis_url)

    def stopped_reading() -> bool:
        idle_ms = consumer_idle_ms(r, patient.consumer)
        return idle_ms is not None and idle_ms > 2 * READ_BLOCK_MS

    wait_for(stopped_reading, "the worker's last read to end")
    # It stopped reading: a request made now waits for another worker.
    play(web, "term", late.call_sid)
    assert patient.popen.wait(timeout=30) == EXIT_DRAINED, patient.log()
    assert (stack.recordings_dir / f"{slow.call_sid}.mp3").read_bytes() == media_bytes(slow)
    assert sim.downloads(late.recording_sid) == 0
    # Its request waits, unread, on the stream for the next worker.
    assert status_of(web, "term", late.call_sid) == "available"

    # No grace at all: the running download is handed back at the head of its queue.
    sim.chunk_delay_s = 0.3
    hasty = stack.start_worker(SHUTDOWN_GRACE_SECONDS="0")
    wait_for(lambda: sim.downloads(late.recording_sid) == 1, "late body to start")
    hasty.popen.send_signal(signal.SIGTERM)
    assert hasty.popen.wait(timeout=30) == EXIT_HANDED_BACK, hasty.log()
    assert "handed back 1 downloads" in hasty.log()
    assert r.scard(keys.slots("term")) == 0  # released at once, not after a lease lapse
    # Due at once: the next worker's retry loop puts it back at the head of its queue.
    assert r.zscore(keys.DELAYED, keys.delayed_member("term", late.call_sid)) is not None
    assert r.hget(keys.call("term", late.call_sid), "state") == b"queued"
    assert not (stack.recordings_dir / f"{late.call_sid}.mp3").exists()
    r.close()
    sim.chunk_delay_s = 0.0
    stack.start_worker()
    assert play_until_stored(web, "term", late.call_sid).content == media_bytes(late)
    assert sim.completed_downloads(late.recording_sid) == 1


def test_reconciler_requeues_calls_a_lost_event_left_stuck(stack: Stack, sim: Simulator) -> None:
    stack.env_overrides.update(
        PREFETCH_ON_WEBHOOK="false",
        INFLIGHT_TTL_SECONDS="1",
        RECONCILE_INTERVAL_MS="200",
        CLAIM_MIN_IDLE_MS="300",
    )
    web = stack.start_web()
    retry_lost, slot_lost, waiting, claimed, poison = (
        register(sim, web, "rep", 600 + i) for i in range(5)
    )

    async def lose_events() -> None:
        client = async_redis(stack.redis_url)
        slots = Slots(client, max_slots=3, lease_ms=1000, queued_ttl_ms=600_000)
        await live_businesses.note(client, ShardMap(1), "rep")
        # A done(retry) handled, but the worker died before scheduling the retry: the call
        # says queued, yet no queue entry and no delayed retry will ever move it.
        admitted = await slots.request("rep", retry_lost.call_sid)
        await slots.release("rep", retry_lost.call_sid, admitted.promoted[0].token, "retry")
        # An admission whose slot and lease were lost (Redis's last AOF second): the call
        # says processing, but no slot member exists to lapse.
        await slots.request("rep", slot_lost.call_sid)
        await client.srem(keys.slots("rep"), slot_lost.call_sid)
        await client.delete(keys.inflight("rep", slot_lost.call_sid))
        # Not stuck: waiting out a retry backoff (far away), so it must be left alone.
        admitted = await slots.request("rep", waiting.call_sid)
        await slots.release("rep", waiting.call_sid, admitted.promoted[0].token, "retry")
        await client.zadd(keys.DELAYED, {keys.delayed_member("rep", waiting.call_sid): 2**50})
        # Stream entries read by a consumer that died before acknowledging them: one read
        # once (claimed and handled by a live worker), one read five times (dead-lettered).
        await client.xgroup_create(keys.EVENTS, keys.EVENTS_GROUP, id="0", mkstream=True)
        await publish(client, ShardMap(1), Event("request", "rep", claimed.call_sid))
        await client.xreadgroup(keys.EVENTS_GROUP, "dead-1", {keys.EVENTS: ">"}, count=1)
        await publish(client, ShardMap(1), Event("request", "rep", poison.call_sid))
        await client.xreadgroup(keys.EVENTS_GROUP, "dead-2", {keys.EVENTS: ">"}, count=1)
        for _ in range(4):
            await client.xreadgroup(keys.EVENTS_GROUP, "dead-2", {keys.EVENTS: "0"}, count=1)
        await client.aclose()

    asyncio.run(lose_events())
    worker = stack.start_worker()
    for rec in (retry_lost, slot_lost, claimed):
        wait_for(
            functools.partial(has_status, web, "rep", rec.call_sid, "ready"),
            f"{rec.call_sid} repaired",
        )
        assert (stack.recordings_dir / f"{rec.call_sid}.mp3").read_bytes() == media_bytes(rec)
        assert sim.media_requests(rec.recording_sid) == 1
    assert re.search(r"RECORDING_REPAIRED business_id=rep stuck=[12] requeued", worker.log())
    r = sync_redis(stack.redis_url)
    wait_for(lambda: r.xlen(keys.DEAD_LETTERS) == 1, "poison entry dead-lettered")
    letters = cli(stack, "dead-letters").stdout
    assert re.search(
        rf"business_id=rep sid={poison.call_sid} kind=stream attempts=6 "
        r"reason='delivered 6 times'",
        letters,
    ), letters
    assert sim.media_requests(poison.recording_sid) == 0
    assert r.xpending(keys.EVENTS, keys.EVENTS_GROUP)["pending"] == 0
    # The one waiting out its backoff was neither repaired nor fetched early.
    assert sim.media_requests(waiting.recording_sid) == 0
    assert r.hget(keys.call("rep", waiting.call_sid), "state") == b"queued"
    assert r.scard(keys.slots("rep")) == 0
    r.close()


def test_request_queued_too_long_is_dropped_and_reported(stack: Stack, sim: Simulator) -> None:
    stack.env_overrides.update(
        PREFETCH_ON_WEBHOOK="false", MAX_SLOTS_PER_BUSINESS="1", QUEUED_TTL_SECONDS="1"
    )
    web = stack.start_web()
    worker = stack.start_worker()
    sim.chunk_size = 16 * 1024
    sim.chunk_delay_s = 0.25
    slow = register(sim, web, "ttl", 800, size_bytes=160 * 1024)  # holds the slot ~2.5 s
    stale = register(sim, web, "ttl", 801)
    play(web, "ttl", slow.call_sid)
    wait_for(lambda: sim.downloads(slow.recording_sid) == 1, "slow body to start")
    play(web, "ttl", stale.call_sid)
    wait_for(lambda: status_of(web, "ttl", slow.call_sid) == "ready", "slow download")
    wait_for(lambda: status_of(web, "ttl", stale.call_sid) == "failed", "stale request dropped")
    assert sim.media_requests(stale.recording_sid) == 0
    r = sync_redis(stack.redis_url)
    assert r.llen(keys.queue("ttl")) == 0 and r.scard(keys.queued("ttl")) == 0
    assert r.scard(keys.slots("ttl")) == 0
    assert r.hget(keys.call("ttl", stale.call_sid), "reason") == b"expired in queue"
    r.close()
    # The client watching /api/events was told (replayed here from the start).
    seen: list[str] = []
    with httpx.stream(
        "GET", f"{web}/api/events", headers={**auth("ttl"), "Last-Event-ID": "0-0"}, timeout=10
    ) as events:
        for line in events.iter_lines():
            if line.startswith("data: ") and stale.call_sid in line:
                seen.append(json.loads(line[6:])["status"])
                if seen[-1] == "failed":
                    break
    assert seen[-2:] == ["queued", "failed"], seen
    # Logged once the script that dropped it has returned: complete once the worker exits.
    assert stack.stop_workers() == [EXIT_DRAINED]
    assert f"RECORDING_EXPIRED business_id=ttl sid={stale.call_sid}" in worker.log()


def test_paused_worker_past_its_lease_neither_publishes_nor_releases(
    stack: Stack, sim: Simulator
) -> None:
    web = crash_trials.prepare(stack, sim)
    rec = register(sim, web, "fence", 950, size_bytes=crash_trials.RECORDING_BYTES)
    play(web, "fence", rec.call_sid)
    wait_for(lambda: sim.downloads(rec.recording_sid) == 1, "body to start")
    lock = lock_path(stack.recordings_dir, rec.call_sid)
    [paused_pid] = flock_state(lock).holders  # the worker downloading it
    paused = next(w for w in stack.workers() if w.popen.pid == paused_pid)
    other = next(w for w in stack.workers() if w is not paused)
    r = sync_redis(stack.redis_url)
    lease = keys.inflight("fence", rec.call_sid)
    assert r.get(lease) == b"1"  # the fencing token of its admission
    paused.popen.send_signal(signal.SIGSTOP)  # a long GC pause, a VM migration...
    try:
        # Its lease lapses and the other worker is admitted under a newer token; it then
        # waits on the recording's flock, which the paused process still holds.
        wait_for(
            lambda: r.get(lease) == b"2" and other.popen.pid in flock_state(lock).waiters,
            "the other worker to take over",
            30,
        )
    finally:
        paused.popen.send_signal(signal.SIGCONT)
    path = stack.recordings_dir / f"{rec.call_sid}.mp3"
    wait_for(path.exists, "the other worker to store it")
    assert path.read_bytes() == media_bytes(rec)
    # The file is stored before its slot is released (and RECORDING_DONE logged).
    wait_for(lambda: r.scard(keys.slots("fence")) == 0, "slot free")
    assert r.hget(keys.call("fence", rec.call_sid), "state") == b"ready"
    assert paused.alive() and sim.media_requests(rec.recording_sid) == 2
    r.close()
    assert stack.stop_workers() == [EXIT_DRAINED, EXIT_DRAINED]  # their logs are complete
    assert f"LEASE_LOST business_id=fence sid={rec.call_sid} token=1" in paused.log()
    assert f"stored sid={rec.call_sid}" not in paused.log()
    # Released once, by the new holder.
    done = rf"RECORDING_DONE business_id=fence sid={rec.call_sid} "
    assert len(re.findall(done, stack.worker_logs())) == 1
