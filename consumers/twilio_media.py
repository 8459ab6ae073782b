"""Fetching recordings from Twilio: the listing that finds a call's recording, and the
streamed media download.

Requests go only to the account's API host (``TWILIO_API_BASE``, or its region's) under
its own path; the URL Twilio put in a webhook is never fetched, so a forged callback
cannot point a worker (and its credentials) elsewhere. Credentials travel with a request
only to the route's own origin: a redirect to another origin (Twilio's signed CDN URLs)
is followed without them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from time import time
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import httpx

from calls.digits import ascii_digits
from calls.errors import DownloadError
from tenants.routing import AccountRoute

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
MAX_REDIRECTS = 3


# Told the outcome of every request to Twilio: its HTTP status, or "timeout"/"transport".
ResponseObserver = Callable[[str], Awaitable[None]]


async def _ignore(_status: str) -> None:
    return None


class Sink(Protocol):
    size: int

    async def write(self, chunk: bytes) -> None: ...


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def retry_after_s(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta or HTTP date), None when absent."""
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time())
    except (TypeError, ValueError):
        return None


def _failure_kind(exc: httpx.TransportError) -> str:
    return "timeout" if isinstance(exc, httpx.TimeoutException) else "transport"


CONCURRENT_HEADER = "twilio-concurrent-requests"


def concurrent_requests(response: httpx.Response) -> int | None:
    """Twilio-Concurrent-Requests: how many requests Twilio counted for the account."""
    raw = response.headers.get(CONCURRENT_HEADER, "")
    return int(raw) if ascii_digits(raw) and len(raw) < 7 else None


class Answer:
    """What the last response of a request said about the account's load, for the
    account permit (AIMD) to learn from."""

    __slots__ = ("concurrent",)

    def __init__(self) -> None:
        self.concurrent: int | None = None

    def note(self, response: httpx.Response) -> None:
        self.concurrent = concurrent_requests(response)


class TwilioMedia:
    def __init__(
        self,
        *,
        read_timeout_s: float = 30.0,
        chunk_size: int = 64 * 1024,
        on_response: ResponseObserver = _ignore,
    ) -> None:
        self._on_response = on_response
        self._chunk_size = chunk_size
        timeout = httpx.Timeout(connect=5.0, read=read_timeout_s, write=10.0, pool=10.0)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        # Two clients: requests to an account's API host (credentials passed per request,
        # only when the URL's origin is the route's), and anything else, never with any.
        self._api = httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False)
        self._cdn = httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False)

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._cdn.aclose()

    @staticmethod
    def _account_url(route: AccountRoute, path: str) -> str:
        return f"{route.api_base.rstrip('/')}/{API_VERSION}/Accounts/{route.account_sid}/{path}"

    async def find_recording(
        self, route: AccountRoute, call_sid: str, answer: Answer | None = None
    ) -> str | None:
        """The call's primary recording, as the contract defines it (the first of its
        recordings to complete), None when Twilio lists none completed."""
        url = self._account_url(route, f"Calls/{call_sid}/Recordings.json")
        try:
            response = await self._api.get(url, auth=route.auth)
        except httpx.TransportError as exc:
            await self._on_response(_failure_kind(exc))
            raise DownloadError(f"listing failed: {type(exc).__name__}", retryable=True) from exc
        await self._on_response(str(response.status_code))
        if answer is not None:
            answer.note(response)
        self._raise_for_status(response, what="listing")
        try:
            recordings = response.json().get("recordings", [])
        except ValueError as exc:
            raise DownloadError("listing was not JSON", retryable=True) from exc
        completed = [r for r in recordings if r.get("status", "completed") == "completed"]
        # Twilio lists newest first: the first to complete is the last listed.
        return str(completed[-1]["sid"]) if completed else None

    async def fetch(
        self, route: AccountRoute, recording_sid: str, sink: Sink, answer: Answer | None = None
    ) -> int:
        """Stream one recording's MP3 into ``sink``; returns the bytes written.

        Raises :class:`DownloadError`; ``retryable`` tells the caller whether to back off
        and try again.
        """
        url = self._account_url(route, f"Recordings/{recording_sid}.mp3")
        api_origin = _origin(route.api_base)
        for _ in range(MAX_REDIRECTS + 1):
            own_host = _origin(url) == api_origin
            client = self._api if own_host else self._cdn
            auth = route.auth if own_host else None
            try:
                async with client.stream("GET", url, auth=auth) as response:
                    await self._on_response(str(response.status_code))
                    if answer is not None and own_host:
                        answer.note(response)
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    self._raise_for_status(response, what="media")
                    return await self._drain(response, sink)
            except httpx.TimeoutException as exc:
                await self._on_response("timeout")
                raise DownloadError(f"timeout ({type(exc).__name__})", retryable=True) from exc
            except httpx.TransportError as exc:
                await self._on_response("transport")
                raise DownloadError(f"transport ({type(exc).__name__})", retryable=True) from exc
        raise DownloadError("too many redirects", retryable=False)

    async def _drain(self, response: httpx.Response, sink: Sink) -> int:
        expected = response.headers.get("content-length")
        async for chunk in response.aiter_raw(self._chunk_size):
            await sink.write(chunk)
        if expected is not None and ascii_digits(expected) and sink.size != int(expected):
            raise DownloadError(f"body cut short ({sink.size} of {expected} bytes)", retryable=True)
        if sink.size == 0:
            raise DownloadError("empty body", retryable=True)
        return sink.size

    @staticmethod
    def _raise_for_status(response: httpx.Response, *, what: str) -> None:
        status = response.status_code
        if status == 200:
            return
        if status == 404:
            # Media can 404 for a moment after the completed callback.
            raise DownloadError(f"{what} 404 (not ready yet)", retryable=True, not_ready=True)
        if status == 429:
            raise DownloadError(
                f"{what} 429 (too many requests)",
                retryable=True,
                retry_after_s=retry_after_s(response),
                throttled=True,
            )
        if status >= 500:
            raise DownloadError(
                f"{what} {status}", retryable=True, retry_after_s=retry_after_s(response)
            )
        raise DownloadError(f"{what} {status}", retryable=False)
