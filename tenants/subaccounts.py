"""``TWILIO_SUBACCOUNTS=auto``: is an ``AccountSid`` a subaccount of the main account, and
what is its auth token? Twilio shows a subaccount's token to its parent
(``GET /2010-04-01/Accounts/{sid}.json`` with the main credentials). Answers are cached
per process, negative ones too, so a forged ``AccountSid`` costs one request to Twilio
and nothing after; the cache is bounded so a flood of forged SIDs cannot grow it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

import httpx

from calls.errors import Unavailable

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
FOUND_TTL_S = 600.0  # a rotated subaccount token is picked up within this
MISSING_TTL_S = 300.0
MAX_ENTRIES = 10_000


class SubaccountDirectory:
    def __init__(
        self,
        *,
        api_base: str,
        main_sid: str,
        main_token: str,
        timeout_s: float = 5.0,
    ) -> None:
        self._url = f"{api_base.rstrip('/')}/{API_VERSION}/Accounts/{{sid}}.json"
        self._main_sid = main_sid
        self._client = httpx.AsyncClient(
            auth=(main_sid, main_token), timeout=timeout_s, follow_redirects=False
        )
        self._cache: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[str | None]] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def token_of(self, sid: str) -> str | None:
        """The subaccount's auth token; None when ``sid`` is no subaccount of the main
        account. Raises :class:`Unavailable` when Twilio cannot say (not cached)."""
        now = time.monotonic()
        cached = self._cache.get(sid)
        if cached is not None and cached[0] > now:
            return cached[1]
        pending = self._inflight.get(sid)
        if pending is not None:
            # One lookup per SID at a time: a burst of webhooks asks Twilio once.
            return await asyncio.shield(pending)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._inflight[sid] = future
        try:
            token = await self._lookup(sid)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(token)
            ttl_s = FOUND_TTL_S if token is not None else MISSING_TTL_S
            self._cache[sid] = (now + ttl_s, token)
            self._cache.move_to_end(sid)
            while len(self._cache) > MAX_ENTRIES:
                self._cache.popitem(last=False)
            return token
        finally:
            self._inflight.pop(sid, None)

    async def _lookup(self, sid: str) -> str | None:
        try:
            response = await self._client.get(self._url.format(sid=sid))
        except httpx.TransportError as exc:
            log.warning("subaccount lookup failed account=%s: %s", sid, type(exc).__name__)
            raise Unavailable("Twilio could not be asked about this AccountSid") from exc
        if response.status_code in (401, 403, 404):
            return None
        if response.status_code != 200:
            log.warning("subaccount lookup account=%s answered %s", sid, response.status_code)
            raise Unavailable("Twilio could not be asked about this AccountSid")
        try:
            body = response.json()
        except ValueError:
            raise Unavailable("Twilio's account answer was not JSON") from None
        token = body.get("auth_token")
        if body.get("owner_account_sid") != self._main_sid or body.get("sid") != sid:
            return None
        return token if isinstance(token, str) and token else None
