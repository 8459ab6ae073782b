"""One request to Twilio under the account-wide cap: a permit of the route's account is
held while it runs; a 429 returns the permit (lowering the account's limit), waits out
``Retry-After`` (or a backoff) and goes again at the head of its business's line. A 429
is back-pressure, not a failure: it is never counted as an attempt (guarantee 9)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from calls.errors import DownloadError
from consumers.backoff import MAX_RETRY_AFTER_S
from consumers.context import WorkerContext
from consumers.twilio_media import Answer
from tenants.routing import AccountRoute

log = logging.getLogger(__name__)

T = TypeVar("T")
THROTTLE_BACKOFF_CAP_S = 30.0


def throttle_wait_s(error: DownloadError, throttles: int, base_s: float) -> float:
    """Retry-After when Twilio sent one, else full-jitter exponential backoff."""
    if error.retry_after_s is not None:
        return min(error.retry_after_s, MAX_RETRY_AFTER_S)
    return random.uniform(0, min(THROTTLE_BACKOFF_CAP_S, base_s * 2.0 ** (throttles - 1)))


async def under_permit(
    ctx: WorkerContext,
    route: AccountRoute,
    b: str,
    request: Callable[[Answer], Awaitable[T]],
) -> T:
    throttles = 0
    while True:
        answer = Answer()
        async with ctx.permits.hold(route.account_sid, b, front=throttles > 0) as permit:
            try:
                result = await request(answer)
            except DownloadError as exc:
                if not exc.throttled:
                    # A status answer still tells the limit nothing new; only 429s do.
                    permit.report("error", answer.concurrent)
                    raise
                permit.report("throttled", answer.concurrent)
                error = exc
            else:
                permit.report("ok", answer.concurrent)
                return result
        throttles += 1
        wait_s = throttle_wait_s(error, throttles, ctx.backoff_base_s)
        log.info(
            "TWILIO_THROTTLED business_id=%s account=%s throttles=%d wait_ms=%d",
            b,
            route.account_sid,
            throttles,
            wait_s * 1000,
        )
        await asyncio.sleep(wait_s)
