"""Which Twilio account a business's request goes to: its path, its API host and the
credentials that may be sent there (guarantee 7: never another account's, never another
host's)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from config.settings import TwilioSettings
from tenants.accounts import AccountRegistry, TwilioAccount

OWN_ACCOUNT_CACHE_S = 5.0


@dataclass(frozen=True, slots=True)
class AccountRoute:
    account_sid: str  # whose path: /2010-04-01/Accounts/<account_sid>/...
    api_base: str  # the only origin `auth` is ever sent to
    auth: tuple[str, str] = field(repr=False)


class AccountRouter:
    """Routes for workers. A business's own account is read from Redis at most every
    ``OWN_ACCOUNT_CACHE_S`` per process (a registration change reaches running workers
    within that time)."""

    def __init__(self, twilio: TwilioSettings, accounts: AccountRegistry) -> None:
        assert twilio.account_sid and twilio.auth_token
        self._twilio = twilio
        self._main_auth = (twilio.account_sid, twilio.auth_token)
        self._accounts = accounts
        self._own: dict[str, tuple[float, TwilioAccount | None]] = {}

    async def _own_account(self, b: str) -> TwilioAccount | None:
        now = time.monotonic()
        cached = self._own.get(b)
        if cached is not None and now - cached[0] < OWN_ACCOUNT_CACHE_S:
            return cached[1]
        acct = await self._accounts.get(b)
        if len(self._own) >= 10_000:
            self._own.clear()
        self._own[b] = (now, acct)
        return acct

    async def route(self, b: str, call_account_sid: str | None = None) -> AccountRoute:
        """The business's own account when it has one; else the account the call's
        webhooks came from (the main account, or with TWILIO_SUBACCOUNTS=auto one of its
        subaccounts, reached with the main credentials as Twilio lets a parent do)."""
        own = await self._own_account(b)
        if own is not None:
            return AccountRoute(
                own.account_sid, self._twilio.api_base_for(own.region), own.basic_auth
            )
        main_sid = self._main_auth[0]
        return AccountRoute(call_account_sid or main_sid, self._twilio.api_base, self._main_auth)
