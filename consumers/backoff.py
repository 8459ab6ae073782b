"""How long a failed download waits before its next attempt."""

from __future__ import annotations

import random

from calls.errors import DownloadError

MAX_RETRY_AFTER_S = 300.0


def backoff_s(error: DownloadError, attempt: int, *, base_s: float, cap_s: float) -> float:
    """``attempt`` is the number of media requests made so far (1 after the first).

    Retry-After wins when Twilio sent one. A 404 right after the completed callback
    waits 1-3 base units, doubling per attempt. Everything else gets full-jitter
    exponential backoff, which spreads retries of many workers hitting the same limit.
    """
    growth = 2.0 ** max(0, attempt - 1)
    if error.retry_after_s is not None:
        return min(float(error.retry_after_s), MAX_RETRY_AFTER_S)
    if error.not_ready:
        return min(cap_s, random.uniform(base_s, 3 * base_s) * growth)
    return random.uniform(0, min(cap_s, base_s * growth))
