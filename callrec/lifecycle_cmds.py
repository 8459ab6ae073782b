"""``callrec backfill`` (and, with the recording lifecycle, ``callrec erase``)."""

from __future__ import annotations

import asyncio
import sys
from typing import Never

from tqdm import tqdm

from calls.errors import CallrecError
from calls.redis_client import connect
from calls.registry import CallRegistry
from config.settings import Settings
from lifecycle.backfill import Backfill, BackfillRequest, OnPage, Progress
from lifecycle.twilio_rest import TwilioRest


def _bar() -> tuple[tqdm[Never], OnPage]:
    # Twilio's lists carry no total: the bar counts calls listed, with the rate.
    bar: tqdm[Never] = tqdm(unit=" calls", desc="backfill", file=sys.stderr, mininterval=0.5)

    def on_page(progress: Progress) -> None:
        bar.n = progress.calls_seen
        bar.set_postfix(
            imported=progress.calls_imported,
            recordings=progress.recordings_imported,
            pages=progress.pages,
            refresh=False,
        )
        bar.refresh()

    return bar, on_page


async def backfill(settings: Settings, request: BackfillRequest) -> int:
    assert settings.redis_url and settings.twilio.account_sid and settings.twilio.auth_token
    redis = await connect(settings, purpose="operator", wait=False)
    twilio = TwilioRest(
        api_base=settings.twilio.api_base,
        account_sid=settings.twilio.account_sid,
        auth_token=settings.twilio.auth_token,
    )
    bar, on_page = _bar()
    try:
        job = Backfill(redis, CallRegistry(redis), twilio, request)
        progress = await job.run(on_page=on_page)
    except CallrecError as exc:
        bar.close()
        print(
            f"callrec backfill: {exc.detail}; run the same command again to resume", file=sys.stderr
        )
        return 1
    finally:
        bar.close()
        await twilio.aclose()
        await redis.aclose()
    print(f"backfill business={request.business_id}: {progress.summary()}")
    return 0


def run_backfill(settings: Settings, request: BackfillRequest) -> int:
    try:
        return asyncio.run(backfill(settings, request))
    except KeyboardInterrupt:
        print(
            "callrec backfill: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return 130


async def erase(settings: Settings, business: str, call_sid: str | None) -> int:
    from calls.errors import NotFound
    from lifecycle.erasure import Eraser
    from storage.factory import open_store

    assert settings.redis_url
    redis = await connect(settings, purpose="operator", wait=False)
    store = open_store(settings)
    try:
        eraser = Eraser(redis, CallRegistry(redis), store)
        if call_sid is None:
            count = await eraser.erase_business(business)
            print(f"erased business={business}: {count} calls newly erased")
            return 0
        try:
            done = await eraser.erase_call(business, call_sid)
        except NotFound:
            print(f"callrec erase: no call {call_sid} for business {business}", file=sys.stderr)
            return 1
    finally:
        await store.close()
        await redis.aclose()
    state = "was erased already" if done.already else "erased"
    print(
        f"call {done.call_sid} {state}: {len(done.recording_sids)} recordings, "
        f"{done.files_removed} files removed; Twilio's copies are deleted by the workers"
    )
    return 0
