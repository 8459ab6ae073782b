"""The one exception hierarchy. ``ingest.errors`` maps it to HTTP answers; workers log it."""

from __future__ import annotations


class CallrecError(Exception):
    """Base of every error callrec raises on purpose. ``status_code`` is its HTTP answer."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(CallrecError):
    status_code = 400


class Unauthorized(CallrecError):
    status_code = 401


class Forbidden(CallrecError):
    status_code = 403


class NotFound(CallrecError):
    status_code = 404


class PayloadTooLarge(CallrecError):
    status_code = 413


class TooManyRequests(CallrecError):
    """A per-tenant or per-process cap is reached; the client may try again later."""

    status_code = 429

    def __init__(self, detail: str, retry_after_s: int = 30) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class TooManyStreams(TooManyRequests):
    """``/api/events``: the business's, or the web process's, open streams are at their cap."""


class Unavailable(CallrecError):
    """A dependency (Redis, object storage) cannot be reached; clients should retry."""

    status_code = 503

    def __init__(self, detail: str, retry_after_s: int = 5) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class StorageUnavailable(Unavailable):
    """Object storage refused a request or could not be reached (missing bucket, denied
    access, network). The web answers 503; a worker retries the download, then gives up."""


class DownloadError(CallrecError):
    """A media fetch failed. ``retryable`` decides between backoff and giving up."""

    def __init__(
        self,
        detail: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        not_ready: bool = False,
        throttled: bool = False,
    ) -> None:
        super().__init__(detail)
        self.retryable = retryable
        self.retry_after_s = retry_after_s  # what the server asked for (Retry-After)
        self.not_ready = not_ready  # Twilio's 404 right after "completed"
        # Twilio's 429 (20429, too many concurrent requests on the account): back-pressure,
        # waited out under the account cap, never counted as an attempt.
        self.throttled = throttled


class LeaseLost(CallrecError):
    """This worker no longer holds the slot it was downloading under (fencing)."""


class RedisTlsError(CallrecError):
    """The TLS handshake with Redis failed for a reason waiting will not fix (a certificate
    the configured CA does not sign, a server that does not speak TLS): the process stops
    at start with this one line instead of retrying forever."""


class TwilioApiError(CallrecError):
    """A REST request to Twilio (listing, DELETE) failed; ``retryable`` as for downloads."""

    def __init__(self, detail: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
