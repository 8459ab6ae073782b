"""Deleting Twilio's copies: one DELETE per recording, retried after failures (with
Retry-After), a copy already gone counts as done, counted for /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from redis.asyncio import Redis

from calls import keys, stats
from lifecycle.twilio_deletes import TwilioDeleter, request_delete
from lifecycle.twilio_rest import TwilioRest
from tests.helpers import call_sid, rec_sid
from twilio_sim import Fault, SimRecording, Simulator

# The ``simulator`` and ``twilio`` (a client of its main account) fixtures.
pytest_plugins = ["tests.twilio_rest_kit"]

B = "biz-del"


def _fixed(client: TwilioRest) -> Callable[[str], Awaitable[TwilioRest]]:
    async def client_for(_b: str) -> TwilioRest:
        return client

    return client_for


def _recordings(sim: Simulator, n: int) -> list[SimRecording]:
    recs = [SimRecording(B, call_sid(i), rec_sid(i)) for i in range(n)]
    for rec in recs:
        sim.add_recording(rec)
    return recs


async def test_each_recording_deleted_once(
    redis: Redis, twilio: TwilioRest, simulator: Simulator
) -> None:
    recs = _recordings(simulator, 3)
    told: list[tuple[str, str, str]] = []

    async def on_deleted(b: str, sid: str, member: str) -> None:
        told.append((b, sid, member))

    deleter = TwilioDeleter(redis, _fixed(twilio), on_deleted=on_deleted)
    for rec in recs:
        await request_delete(redis, B, rec.recording_sid, rec.call_sid)
        # Twice: still one deletion.
        await request_delete(redis, B, rec.recording_sid, rec.call_sid)
    assert await deleter.run_due() == 3
    assert await deleter.run_due() == 0
    assert [simulator.deletes(r.recording_sid) for r in recs] == [1, 1, 1]
    assert not any(simulator.has_recording(r.recording_sid) for r in recs)
    assert sorted(told) == sorted((B, r.recording_sid, r.call_sid) for r in recs)
    assert await redis.zcard(keys.TWILIO_DELETES) == 0
    counters = await stats.snapshot(redis, [keys.STATS])
    assert counters[stats.twilio_delete_field("deleted")] == 3

    # Asked again (an erasure after DELETE_FROM_TWILIO): Twilio's 404 means done.
    await request_delete(redis, B, recs[0].recording_sid, recs[0].call_sid)
    assert await deleter.run_due() == 1
    assert simulator.deletes_not_found(recs[0].recording_sid) == 1
    assert (await stats.snapshot(redis, [keys.STATS]))[stats.twilio_delete_field("gone")] == 1


async def test_failures_are_retried_after_backoff(
    redis: Redis, twilio: TwilioRest, simulator: Simulator
) -> None:
    (rec,) = _recordings(simulator, 1)
    simulator.fail_deletes([Fault.server_error(503), Fault.too_many(retry_after_s=0.2)])
    deleter = TwilioDeleter(redis, _fixed(twilio), backoff_base_s=0.01)
    await request_delete(redis, B, rec.recording_sid, rec.call_sid)
    assert await deleter.run_due() == 1
    assert simulator.has_recording(rec.recording_sid)
    member = f"{B}|{rec.recording_sid}|{rec.call_sid}"
    assert await redis.zscore(keys.TWILIO_DELETES, member) is not None

    # Retry-After 0.2 s: due again only then, so a few idle rounds go by first.
    for _ in range(500):
        await deleter.run_due()
        if simulator.deletes(rec.recording_sid):
            break
        await asyncio.sleep(0.02)
    assert simulator.deletes(rec.recording_sid) == 1
    assert (await stats.snapshot(redis, [keys.STATS]))[stats.twilio_delete_field("retry")] == 2
    assert await redis.hget(keys.TWILIO_DELETE_ATTEMPTS, member) is None


async def test_every_request_goes_through_the_accounts_gate(
    redis: Redis, simulator: Simulator
) -> None:
    import contextlib

    held: list[str] = []

    @contextlib.asynccontextmanager
    async def gate() -> AsyncIterator[None]:
        held.append("in")
        yield
        held.append("out")

    (rec,) = _recordings(simulator, 1)
    async with TwilioRest(
        api_base=simulator.base_url,
        account_sid=simulator.account_sid,
        auth=(simulator.account_sid, simulator.auth_token),
        gate=gate,
    ) as client:
        await request_delete(redis, B, rec.recording_sid, rec.call_sid)
        assert await TwilioDeleter(redis, _fixed(client)).run_due() == 1
        page = await client.page(client.first_page_uri("Recordings.json", {}, 50), "recordings")
    assert page.items == []  # deleted: the account lists nothing
    assert held == ["in", "out", "in", "out"]
    assert simulator.deletes(rec.recording_sid) == 1
