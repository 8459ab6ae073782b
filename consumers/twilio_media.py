"""Fetching recordings from Twilio: the listing that finds a call's recording, and the
streamed media download.

Requests go only to ``TWILIO_API_BASE``; the URL Twilio put in a webhook is never
fetched, so a forged callback cannot point a worker (and its credentials) elsewhere. A
redirect to another origin (Twilio's signed CDN URLs) is followed without credentials.
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


class TwilioMedia:
    def __init__(
        self,
        *,
        api_base: str,
        account_sid: str,
        auth_token: str,
        read_timeout_s: float = 30.0,
        chunk_size: int = 64 * 1024,
        on_response: ResponseObserver = _ignore,
    ) -> None:
        self._on_response = on_response
        self._api_base = api_base.rstrip("/")
        self._account_sid = account_sid
        self._api_origin = _origin(self._api_base)
        self._chunk_size = chunk_size
        timeout = httpx.Timeout(connect=5.0, read=read_timeout_s, write=10.0, pool=10.0)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        # Two clients so credentials cannot leak by accident: only the first has them.
        self._api = httpx.AsyncClient(
            auth=(account_sid, auth_token), timeout=timeout, limits=limits, follow_redirects=False
        )
        self._cdn = httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False)

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._cdn.aclose()

    def _account_url(self, path: str) -> str:
        return f"{self._api_base}/{API_VERSION}/Accounts/{self._account_sid}/{path}"

    async def find_recording(self, call_sid: str) -> str | None:
        """The call's primary recording, as the contract defines it (the first of its
        recordings to complete), None when Twilio lists none completed."""
        url = self._account_url(f"Calls/{call_sid}/Recordings.json")
        try:
            response = await self._api.get(url)
        except httpx.TransportError as exc:
            await self._on_response(_failure_kind(exc))
            raise DownloadError(f"listing failed: {type(exc).__name__}", retryable=True) from exc
        await self._on_response(str(response.status_code))
        self._raise_for_status(response, what="listing")
        try:
            recordings = response.json().get("recordings", [])
        except ValueError as exc:
            raise DownloadError("listing was not JSON", retryable=True) from exc
        completed = [r for r in recordings if r.get("status", "completed") == "completed"]
        # Twilio lists newest first: the first to complete is the last listed.
        return str(completed[-1]["sid"]) if completed else None

    async def fetch(self, recording_sid: str, sink: Sink) -> int:
        """Stream one recording's MP3 into ``sink``; returns the bytes written.

        Raises :class:`DownloadError`; ``retryable`` tells the caller whether to back off
        and try again.
        """
        url = self._account_url(f"Recordings/{recording_sid}.mp3")
        for _ in range(MAX_REDIRECTS + 1):
            client = self._api if _origin(url) == self._api_origin else self._cdn
            try:
                async with client.stream("GET", url) as response:
                    await self._on_response(str(response.status_code))
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
            )
        if status >= 500:
            raise DownloadError(
                f"{what} {status}", retryable=True, retry_after_s=retry_after_s(response)
            )
        raise DownloadError(f"{what} {status}", retryable=False)
