"""Which Twilio account a business's request goes to: its path, its API host and the
credentials that may be sent there (guarantee 7: never another account's, never another
host's)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from config.settings import TwilioSettings
from tenants.accounts import AccountRegistry, TwilioAccount

VERSION_CHECK_S = 5.0
MAX_CACHED = 100_000


@dataclass(frozen=True, slots=True)
class AccountRoute:
    account_sid: str  # whose path: /2010-04-01/Accounts/<account_sid>/...
    api_base: str  # the only origin `auth` is ever sent to
    auth: tuple[str, str] = field(repr=False)


class AccountRouter:
    """Routes for workers. Businesses' accounts (or their absence) are cached per process
    and dropped when the registrations' version changes, which is read at most every
    ``VERSION_CHECK_S``: a registration change reaches running workers within that time,
    and a steady business costs no read per download."""

    def __init__(
        self,
        twilio: TwilioSettings,
        accounts: AccountRegistry,
        *,
        version_check_s: float = VERSION_CHECK_S,
    ) -> None:
        assert twilio.account_sid and twilio.auth_token
        self._twilio = twilio
        self._main_auth = (twilio.account_sid, twilio.auth_token)
        self._accounts = accounts
        self._own: dict[str, TwilioAccount | None] = {}
        self._version = -1
        self._checked_at = float("-inf")
        self._version_check_s = version_check_s

    async def _own_account(self, b: str) -> TwilioAccount | None:
        now = time.monotonic()
        if now - self._checked_at >= self._version_check_s:
            version = await self._accounts.version()
            if version != self._version:
                self._own.clear()
                self._version = version
            self._checked_at = now
        if b in self._own:
            return self._own[b]
        acct = await self._accounts.get(b)
        if len(self._own) >= MAX_CACHED:
            self._own.clear()
        self._own[b] = acct
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
