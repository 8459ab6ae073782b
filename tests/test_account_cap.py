"""The account-wide cap through real processes: many businesses sharing one Twilio
account never have more requests in flight there than the account allows (the
simulator's own counter), nobody's recording fails, every business is served, FIFO
within each business; and an account that answers 429 below callrec's cap slows callrec
down (AIMD) without spending a single attempt."""

from __future__ import annotations

import asyncio
import re

import httpx
import redis
from redis.asyncio import Redis as AsyncRedis

from calls import keys
from calls.events import Event, publish
from calls.registry import CallRegistry
from calls.shards import ShardMap
from tests.helpers import call_sid, rec_sid
from tests.stack import Stack, wait_for
from tests.test_metrics_and_logs import scrape, value
from twilio_sim import SimRecording, Simulator

BUSINESSES = 100
PER_BUSINESS = 5
SIM_LIMIT = 20


def register_all(
    sim: Simulator, redis_url: str, businesses: list[str], per_business: int
) -> dict[str, list[SimRecording]]:
    """Each business's calls, written to the registry as their signed recording webhooks
    would (those are tested in test_tenants_stack; hundreds of them would only time the
    machine), then requested in order: that order is each business's FIFO order, the
    businesses interleaved."""
    recs = {
        b: [
            SimRecording(b, call_sid(10_000 * (i + 1) + n), rec_sid(10_000 * (i + 1) + n), 2048)
            for n in range(per_business)
        ]
        for i, b in enumerate(businesses)
    }
    for rs in recs.values():
        for rec in rs:
            sim.add_recording(rec)

    async def write() -> None:
        client = AsyncRedis.from_url(redis_url)
        registry = CallRegistry(client)
        try:
            for b, rs in recs.items():
                for rec in rs:
                    await registry.apply_recording_status(
                        b,
                        rec.call_sid,
                        recording_sid=rec.recording_sid,
                        twilio_status="completed",
                        duration="30",
                        now_ms=1_700_000_000_000,
                    )
                    await registry.set_account(b, rec.call_sid, sim.account_sid)
            for n in range(per_business):
                await publish(
                    client,
                    ShardMap(1),
                    *(Event("request", b, rs[n].call_sid, source="play") for b, rs in recs.items()),
                )
        finally:
            await client.aclose()

    asyncio.run(write())
    return recs


def test_hundred_businesses_share_one_account_capped_at_its_limit(
    stack: Stack, sim: Simulator
) -> None:
    main = sim.account_sid
    sim.set_account_limit(main, SIM_LIMIT)
    # Held requests must not time out while the others line up.
    stack.env_overrides.update(TWILIO_READ_TIMEOUT_SECONDS="120")
    web = stack.start_web()
    stack.start_worker()
    stack.start_worker()
    businesses = [f"shared{i:03d}" for i in range(BUSINESSES)]
    # Held at Twilio until every business has asked: the cap, not the speed of the
    # machine, decides how many are in flight.
    sim.hold_media = True
    recs = register_all(sim, stack.redis_url, businesses, PER_BUSINESS)
    everyone = [r for rs in recs.values() for r in rs]
    wait_for(lambda: sim.account_current(main) == SIM_LIMIT, "the cap to fill")
    r = redis.Redis.from_url(stack.redis_url)

    def waiting() -> int:
        return sum(int(r.llen(keys.WAIT_PREFIX.format(a=main) + b)) for b in businesses)

    # Every business holds its slots (3 each), so most wait for a permit of the account.
    wait_for(lambda: waiting() >= BUSINESSES * 3 - SIM_LIMIT, "the others to wait")
    sim.hold_media = False
    files = stack.recordings_dir
    wait_for(lambda: all((files / f"{x.call_sid}.mp3").exists() for x in everyone), "all", 120)

    assert sim.account_max_concurrent(main) == SIM_LIMIT
    assert sim.account_throttled(main) == 0
    for b, rs in recs.items():
        started = sim.order_started(b)
        assert sorted(started) == sorted(x.call_sid for x in rs), b
        # FIFO per business: a download never overtakes one admitted a round earlier.
        assert all(abs(started.index(x.call_sid) - i) < 3 for i, x in enumerate(rs)), b
    assert all(sim.downloads(x.recording_sid) == 1 for x in everyone)
    # A file appears before its download is counted: wait for the counters to settle.
    wait_for(
        lambda: value(scrape(web), "callrec_downloads_total", outcome="ok") == len(everyone),
        "every download counted",
    )
    m = scrape(web)
    assert value(m, "callrec_downloads_total", outcome="failed") == 0
    assert "RECORDING_FAILED" not in stack.worker_logs()
    assert r.scard(keys.PERMITS.format(a=main)) == 0
    print(
        f"\n{BUSINESSES} businesses x {PER_BUSINESS}: simulator max concurrent "
        f"{sim.account_max_concurrent(main)}/{SIM_LIMIT}, 429s {sim.account_throttled(main)}, "
        f"failed {value(m, 'callrec_downloads_total', outcome='failed'):.0f}"
    )


def test_429s_below_callrec_cap_slow_it_down_and_fail_nothing(stack: Stack, sim: Simulator) -> None:
    main = sim.account_sid
    sim.set_account_limit(main, 4)  # Twilio allows less than callrec's 20
    sim.latency_s = 0.05
    stack.env_overrides.update(DOWNLOAD_MAX_ATTEMPTS="1")
    web = stack.start_web()
    stack.start_worker()
    stack.start_worker()
    businesses = [f"small{i}" for i in range(10)]
    recs = register_all(sim, stack.redis_url, businesses, 3)
    everyone = [r for rs in recs.values() for r in rs]
    files = stack.recordings_dir
    wait_for(lambda: all((files / f"{x.call_sid}.mp3").exists() for x in everyone), "all", 120)
    wait_for(
        lambda: value(scrape(web), "callrec_downloads_total", outcome="ok") == len(everyone),
        "every download counted",
    )
    throttled = sim.account_throttled(main)
    assert throttled > 0
    m = scrape(web)
    assert value(m, "callrec_downloads_total", outcome="failed") == 0
    assert value(m, "callrec_twilio_account_throttled_total", account_sid=main) == throttled
    # The account's limit came down from 20 (it climbs back as requests succeed).
    assert value(m, "callrec_twilio_account_limit", account_sid=main) < 20
    logs = stack.worker_logs()
    assert "RECORDING_FAILED" not in logs and "RECORDING_RETRY" not in logs
    assert len(re.findall(r"TWILIO_THROTTLED ", logs)) == throttled
    status = httpx.get(f"{web}/healthz", timeout=5)
    assert status.status_code == 200
    print(f"\n429s answered: {throttled} (simulator limit 4, callrec's cap 20); failed: 0")
