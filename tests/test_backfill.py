"""Backfill against the simulator's account lists and a real Redis: every past call and
recording imported once, resumable after an interruption, a second run adds nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from redis.asyncio import Redis

from calls import keys
from calls.errors import BadRequest
from calls.events import Event
from calls.redis_values import entries, text_map, texts
from calls.registry import CallRegistry
from calls.shards import ShardMap
from lifecycle.backfill import Backfill, BackfillRequest, Progress
from lifecycle.backlog import BacklogFeeder
from lifecycle.twilio_rest import TwilioRest
from twilio_sim import SimCall, SimRecording, Simulator, past_calls

# The ``simulator`` and ``twilio`` (a client of its main account) fixtures.
pytest_plugins = ["tests.twilio_rest_kit"]

B = "biz-fill"
NEWEST = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


class Interrupted(Exception):
    pass


def _history(sim: Simulator, n: int, **kw: object) -> tuple[list[SimCall], list[SimRecording]]:
    calls, recs = past_calls(B, n, newest=NEWEST, **kw)  # type: ignore[arg-type]
    sim.add_calls(calls, recs)
    return calls, recs


async def _run(redis: Redis, twilio: TwilioRest, request: BackfillRequest) -> Progress:
    return await Backfill(redis, CallRegistry(redis), twilio, request).run()


async def test_imports_every_call_and_recording_once(
    redis: Redis, twilio: TwilioRest, simulator: Simulator
) -> None:
    calls, recs = _history(simulator, 5000)
    first = await _run(redis, twilio, BackfillRequest(B))
    assert (first.calls_imported, first.recordings_imported) == (5000, 5000)
    # 5 pages of calls, 5 of recordings (1000 a page).
    assert first.pages == 10
    assert await redis.zcard(keys.calls_by_time(B)) == 5000
    registry = CallRegistry(redis)
    sample = calls[1234]
    call = await registry.get(B, sample.call_sid)
    assert call is not None
    assert call.fields["from"] == sample.from_ and call.fields["to"] == sample.to
    assert call.fields["rec_sid"] == recs[1234].recording_sid
    assert call.state == "available"
    assert call.as_json()["started_at"] == sample.start_time.isoformat().replace("+00:00", "Z")
    assert not await redis.exists(keys.backfill(B))

    second = await _run(redis, twilio, BackfillRequest(B))
    assert (second.calls_imported, second.recordings_imported) == (0, 0)
    assert (second.calls_seen, second.recordings_seen) == (5000, 5000)


async def test_interrupted_run_resumes_where_it_stopped(
    redis: Redis, twilio: TwilioRest, simulator: Simulator
) -> None:
    _history(simulator, 1200)
    request = BackfillRequest(B, page_size=100)

    def stop_after_five(progress: Progress) -> None:
        if progress.pages == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        await Backfill(redis, CallRegistry(redis), twilio, request).run(on_page=stop_after_five)
    cursor = text_map(await redis.hgetall(keys.backfill(B)))
    assert cursor["pages"] == "5" and cursor["calls_imported"] == "500"
    listed_before = simulator.listing_requests()

    resumed = await _run(redis, twilio, request)
    assert resumed.resumed
    assert (resumed.calls_imported, resumed.recordings_imported) == (1200, 1200)
    # It started at page 6: 7 more pages of calls and 12 of recordings, not 12 + 12.
    assert simulator.listing_requests() - listed_before == 7 + 12
    assert resumed.pages == 24


async def test_another_range_does_not_resume_a_stale_cursor(
    redis: Redis, twilio: TwilioRest, simulator: Simulator
) -> None:
    _history(simulator, 300)
    with pytest.raises(Interrupted):

        def stop(progress: Progress) -> None:
            raise Interrupted

        await Backfill(redis, CallRegistry(redis), twilio, BackfillRequest(B, page_size=50)).run(
            on_page=stop
        )
    other = await _run(redis, twilio, BackfillRequest(B, since=date(2025, 3, 10)))
    assert not other.resumed
    assert (
        other.calls_imported
        == sum(
            1
            for c in past_calls(B, 300, newest=NEWEST)[0]
            if c.start_time.date() == date(2025, 3, 10)
        )
        - 50
    )


async def test_date_range_and_numbers_choose_the_calls(
    redis: Redis, twilio: TwilioRest, simulator: Simulator
) -> None:
    ours, theirs = "+15551110000", "+15552220000"
    calls, _ = _history(simulator, 2000, numbers=(ours, theirs))
    day = date(2025, 3, 8)
    done = await _run(redis, twilio, BackfillRequest(B, since=day, until=day, numbers=(ours,)))
    expected = {c.call_sid for c in calls if c.start_time.date() == day and ours in (c.to, c.from_)}
    assert expected
    got = set(texts(await redis.zrange(keys.calls_by_time(B), 0, -1)))
    assert got == expected
    assert done.calls_imported == len(expected)
    # Recordings of other numbers' calls (listed too: the list has no number filter) are
    # not this business's.
    assert done.recordings_imported == len(expected)


def test_bad_requests_are_refused_before_anything_runs() -> None:
    with pytest.raises(BadRequest, match="after"):
        BackfillRequest(B, since=date(2025, 3, 9), until=date(2025, 3, 1))
    with pytest.raises(BadRequest, match=r"E\.164"):
        BackfillRequest(B, numbers=("5551234",))
    with pytest.raises(BadRequest, match="business_id"):
        BackfillRequest("no spaces allowed")


async def test_download_waits_in_the_backlog_until_users_queue_is_empty(
    redis: Redis, twilio: TwilioRest, simulator: Simulator
) -> None:
    calls, _ = _history(simulator, 10)
    done = await _run(redis, twilio, BackfillRequest(B, download=True))
    assert done.downloads_queued == 10
    assert await redis.llen(keys.backlog(B)) == 10
    feeder = BacklogFeeder(redis, max_slots=3, shards=ShardMap(1))

    # A user waits in the queue: the backlog gives nothing.
    await redis.rpush(keys.queue(B), "CA" + "9" * 32)
    assert await feeder.feed_all() == 0
    await redis.delete(keys.queue(B))
    # One slot busy: two free, two taken, as ordinary request events.
    await redis.sadd(keys.slots(B), "CA" + "8" * 32)
    assert await feeder.feed_all() == 2
    events = [Event.parse(fields) for _, fields in entries(await redis.xrange(keys.EVENTS))]
    # Oldest first, as they were made.
    assert [(e.kind, e.sid, e.source) for e in events] == [
        ("request", calls[9].call_sid, "backfill"),
        ("request", calls[8].call_sid, "backfill"),
    ]
    assert await redis.llen(keys.backlog(B)) == 8
    # A second run queues nothing again.
    again = await _run(redis, twilio, BackfillRequest(B, download=True))
    assert again.downloads_queued == 0
    assert await redis.llen(keys.backlog(B)) == 8


async def test_a_backfill_asked_over_the_api_is_run_once_by_a_worker(
    redis: Redis, twilio: TwilioRest, simulator: Simulator
) -> None:
    from lifecycle.backfill_jobs import BackfillRunner, job_status, submit

    _history(simulator, 250)

    async def client_for(_b: str) -> TwilioRest:
        return twilio

    await submit(redis, BackfillRequest(B, since=date(2025, 3, 9)))
    assert await job_status(redis, B) == {"business_id": B, "state": "queued"}
    runner = BackfillRunner(redis, CallRegistry(redis), client_for)
    assert await runner.run_due() == 1
    assert await runner.run_due() == 0  # done: nothing left to claim
    status = await job_status(redis, B)
    assert status is not None and status["state"] == "done"
    expected = sum(
        1 for c in past_calls(B, 250, newest=NEWEST)[0] if c.start_time.date() >= date(2025, 3, 9)
    )
    assert status["calls_imported"] == expected == await redis.zcard(keys.calls_by_time(B))
    assert await job_status(redis, "nobody") is None


async def test_conference_recordings_of_known_conferences_are_imported(
    redis: Redis, twilio: TwilioRest, simulator: Simulator
) -> None:
    calls, recs = _history(simulator, 5)
    known, stranger = "CF" + "1" * 32, "CF" + "2" * 32
    registry = CallRegistry(redis)
    await registry.recordings.apply_conference_status(
        B, known, calls[0].call_sid, "participant-join", now_ms=1
    )
    at = NEWEST - timedelta(minutes=1)
    ours = SimRecording(B, "", "RE" + "1" * 32, conference_sid=known, created_at=at)
    theirs = SimRecording(B, "", "RE" + "2" * 32, conference_sid=stranger, created_at=at)
    simulator.add_calls([], [ours, theirs])
    done = await _run(redis, twilio, BackfillRequest(B, download=True))
    assert done.recordings_imported == 6
    # Each downloads under its slot member: the call for a primary, the SID otherwise.
    backlog = set(texts(await redis.lrange(keys.backlog(B), 0, -1)))
    assert backlog == {c.call_sid for c in calls} | {ours.recording_sid}
    call = await registry.get(B, calls[0].call_sid)
    assert call is not None
    listed = (await registry.recordings.recordings_of([call]))[call.sid]
    assert [r.sid for r in listed] == [recs[0].recording_sid, ours.recording_sid]
    assert not await redis.exists(keys.call(B, theirs.recording_sid))
