"""Twilio's REST calls beyond media: the account-level lists (paged through
``next_page_uri``) and DELETE of a recording.

Like the media client, requests go only to ``TWILIO_API_BASE`` with the account's
credentials: a ``next_page_uri`` is a path and is joined to that base, never followed to
another host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from calls.errors import TwilioApiError
from consumers.twilio_media import API_VERSION, retry_after_s

log = logging.getLogger(__name__)

LIST_ATTEMPTS = 5
RETRY_BASE_S = 0.5
RETRY_CAP_S = 30.0


Gate = Callable[[], AbstractAsyncContextManager[object]]


@contextlib.asynccontextmanager
async def _open_gate() -> AsyncIterator[None]:
    yield


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_uri: str | None  # a path with its query, as Twilio returns it; None on the last page


def classify(response: httpx.Response, what: str) -> TwilioApiError:
    """The error a non-success answer stands for (callers handle 2xx and expected 404s)."""
    status = response.status_code
    retryable = status == 429 or status >= 500
    return TwilioApiError(
        f"{what} {status}", retryable=retryable, retry_after_s=retry_after_s(response)
    )


class TwilioRest:
    def __init__(
        self,
        *,
        api_base: str,
        account_sid: str,
        auth_token: str | None = None,
        auth: tuple[str, str] | None = None,
        timeout_s: float = 30.0,
        retry_base_s: float = RETRY_BASE_S,
        gate: Gate | None = None,
    ) -> None:
        # Held around every request: the account-wide cap on requests in flight.
        self._gate = gate or _open_gate
        self._api_base = api_base.rstrip("/")
        self._account_sid = account_sid
        self._retry_base_s = retry_base_s
        timeout = httpx.Timeout(connect=5.0, read=timeout_s, write=10.0, pool=10.0)
        # The account's own auth token, or an API key (SK..., secret) of that account.
        credentials = auth or (account_sid, auth_token or "")
        self._client = httpx.AsyncClient(auth=credentials, timeout=timeout, follow_redirects=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> TwilioRest:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    @property
    def account_path(self) -> str:
        return f"/{API_VERSION}/Accounts/{self._account_sid}"

    def first_page_uri(self, resource: str, params: Mapping[str, str], page_size: int) -> str:
        """The path of a list's first page; ``params`` may use Twilio's ``Field>`` names."""
        query = urlencode([*params.items(), ("PageSize", str(page_size))])
        return f"{self.account_path}/{resource}?{query}"

    def _url(self, uri: str) -> str:
        parts = urlsplit(uri)
        # Only the path and query of what Twilio handed back; the host is always ours.
        if not parts.path.startswith(self.account_path + "/"):
            raise TwilioApiError(f"next_page_uri outside this account: {uri!r}", retryable=False)
        return f"{self._api_base}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    async def page(self, uri: str, key: str) -> Page:
        """One page, retried on 429, 5xx and transport errors with backoff."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._page_once(uri, key)
            except TwilioApiError as exc:
                if not exc.retryable or attempt >= LIST_ATTEMPTS:
                    raise
                delay = exc.retry_after_s
                if delay is None:
                    delay = random.uniform(0, min(RETRY_CAP_S, self._retry_base_s * 2**attempt))
                log.info("listing retry in %.1fs (%s)", delay, exc.detail)
                await asyncio.sleep(delay)

    async def _page_once(self, uri: str, key: str) -> Page:
        try:
            async with self._gate():
                response = await self._client.get(self._url(uri))
        except httpx.TransportError as exc:
            raise TwilioApiError(f"listing {type(exc).__name__}", retryable=True) from exc
        if response.status_code != 200:
            raise classify(response, "listing")
        try:
            body = response.json()
            items = body[key]
            next_uri = body.get("next_page_uri") or None
        except (ValueError, KeyError, TypeError) as exc:
            raise TwilioApiError(f"listing answer without {key!r}", retryable=True) from exc
        if not isinstance(items, list):
            raise TwilioApiError(f"listing {key!r} is not a list", retryable=False)
        return Page(items, next_uri)

    async def pages(self, uri: str, key: str) -> AsyncIterator[tuple[str, Page]]:
        """(uri of the page, the page) from ``uri`` to the last page."""
        next_uri: str | None = uri
        while next_uri:
            page = await self.page(next_uri, key)
            yield next_uri, page
            next_uri = page.next_uri

    async def delete_recording(self, recording_sid: str) -> bool:
        """DELETE Twilio's copy once. True when deleted, False when it was gone already
        (404: deleted before, or never there). Raises :class:`TwilioApiError` otherwise."""
        url = f"{self._api_base}{self.account_path}/Recordings/{recording_sid}.json"
        try:
            async with self._gate():
                response = await self._client.delete(url)
        except httpx.TransportError as exc:
            raise TwilioApiError(f"delete {type(exc).__name__}", retryable=True) from exc
        if response.status_code in (200, 204):
            return True
        if response.status_code == 404:
            return False
        raise classify(response, "delete")
