"""Which auth token signs a business's webhook: the one of the account its
``AccountSid`` names, and that account must be the business's (its own registered
account; else the main account, or with ``TWILIO_SUBACCOUNTS=auto`` a subaccount of it).
Anything else is 403 before a field of the form is used."""

from __future__ import annotations

from calls.errors import Forbidden
from calls.sids import ACCOUNT_SID
from config.settings import TwilioSettings
from tenants.accounts import AccountRegistry
from tenants.subaccounts import SubaccountDirectory


class WebhookAccounts:
    def __init__(
        self,
        twilio: TwilioSettings,
        accounts: AccountRegistry,
        subaccounts: SubaccountDirectory | None,
    ) -> None:
        self._main_sid = twilio.account_sid
        self._main_token = twilio.auth_token
        self._accounts = accounts
        self._subaccounts = subaccounts

    async def token_for(self, b: str, account_sid: str) -> str:
        if not account_sid:
            raise Forbidden("missing AccountSid")
        if not ACCOUNT_SID.fullmatch(account_sid):
            raise Forbidden("AccountSid is not a Twilio Account SID")
        own = await self._accounts.get(b)
        if own is not None:
            if account_sid == own.account_sid:
                return own.auth_token
            raise Forbidden("AccountSid is not this business's Twilio account")
        if account_sid == self._main_sid and self._main_token:
            return self._main_token
        if self._subaccounts is not None:
            token = await self._subaccounts.token_of(account_sid)
            if token is not None:
                return token
        if not self._main_token:
            raise Forbidden("webhook signing key (TWILIO_AUTH_TOKEN) is not configured")
        raise Forbidden("AccountSid is not this business's Twilio account")
