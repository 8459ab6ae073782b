"""A business's own Twilio account (or subaccount): what is registered, how it is
validated, and where it is kept (one Redis hash per business, secrets sealed with
:class:`tenants.secrets.SecretBox`; nothing here ever logs or returns a secret)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from calls import keys
from calls.errors import BadRequest
from calls.redis_client import RedisClient
from calls.redis_values import text_map, texts
from calls.sids import ACCOUNT_SID
from tenants.secrets import SecretBox, SecretsUnreadable

API_KEY_SID = re.compile(r"SK[0-9a-f]{32}")
MAX_SECRET_CHARS = 256
FIELDS = ("account_sid", "auth_token", "api_key", "api_secret", "region")


@dataclass(frozen=True, slots=True)
class TwilioAccount:
    account_sid: str
    auth_token: str = field(repr=False)
    api_key: str | None = None
    api_secret: str | None = field(default=None, repr=False)
    region: str | None = None

    @property
    def basic_auth(self) -> tuple[str, str]:
        """REST credentials: the API key pair when there is one (Twilio's recommendation
        for production), else the account SID and auth token."""
        if self.api_key and self.api_secret:
            return self.api_key, self.api_secret
        return self.account_sid, self.auth_token


def _secret(data: Mapping[str, object], name: str, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{name} is required and must not be empty")
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{name} must be a non-empty string")
    if len(value) > MAX_SECRET_CHARS or not value.isprintable():
        raise BadRequest(f"{name} must be at most {MAX_SECRET_CHARS} printable characters")
    return value


def parse_account(data: Mapping[str, object], regions: Collection[str]) -> TwilioAccount:
    """A registration from JSON or CLI flags; every error names its field (400)."""
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]} (allowed: {', '.join(FIELDS)})")
    sid = data.get("account_sid")
    if not isinstance(sid, str) or not ACCOUNT_SID.fullmatch(sid):
        raise BadRequest("account_sid must be a Twilio Account SID (AC followed by 32 hex digits)")
    token = _secret(data, "auth_token", required=True)
    assert token is not None
    api_key = data.get("api_key") or None
    if api_key is not None and (not isinstance(api_key, str) or not API_KEY_SID.fullmatch(api_key)):
        raise BadRequest("api_key must be a Twilio API key SID (SK followed by 32 hex digits)")
    api_secret = _secret(data, "api_secret", required=api_key is not None)
    if api_secret is not None and api_key is None:
        raise BadRequest("api_secret needs api_key")
    region = data.get("region") or None
    if region is not None and (not isinstance(region, str) or region.lower() not in regions):
        raise BadRequest(f"region must be one of {', '.join(sorted(regions))}")
    return TwilioAccount(
        sid, token, api_key, api_secret, region.lower() if isinstance(region, str) else None
    )


class AccountRegistry:
    """Per business ``tw_account:{b}``; ``tw_accounts`` indexes the businesses for operators."""

    def __init__(self, redis: RedisClient, box: SecretBox | None) -> None:
        self._redis = redis
        self._box = box

    def _sealer(self) -> SecretBox:
        if self._box is None:
            raise BadRequest(
                "CALLREC_SECRETS_KEY is not configured: Twilio secrets cannot be stored "
                "encrypted (`callrec secrets-key` prints a key)"
            )
        return self._box

    async def put(self, b: str, acct: TwilioAccount) -> None:
        box = self._sealer()
        # One HSET writing every field (absent ones as ""): readers see the old account or
        # the new one, never a mix. Not a MULTI: the index keys live in other cluster slots.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                keys.account(b),
                mapping={
                    "account_sid": acct.account_sid,
                    "auth_token": box.seal(acct.auth_token),
                    "api_key": acct.api_key or "",
                    "api_secret": box.seal(acct.api_secret) if acct.api_secret else "",
                    "region": acct.region or "",
                },
            )
            pipe.sadd(keys.ACCOUNTS, b)
            pipe.incr(keys.ACCOUNTS_VERSION)
            await pipe.execute()

    async def get(self, b: str) -> TwilioAccount | None:
        raw = text_map(await self._redis.hgetall(keys.account(b)))
        if not raw:
            return None
        if self._box is None:
            raise SecretsUnreadable(
                f"business {b} has its own Twilio account but CALLREC_SECRETS_KEY is not set"
            )
        return TwilioAccount(
            raw["account_sid"],
            self._box.open(raw["auth_token"]),
            raw.get("api_key") or None,
            self._box.open(raw["api_secret"]) if raw.get("api_secret") else None,
            raw.get("region") or None,
        )

    async def describe(self, b: str) -> dict[str, object] | None:
        """What may be shown: no secret, only whether there is one."""
        raw = text_map(await self._redis.hgetall(keys.account(b)))
        if not raw:
            return None
        return {
            "business_id": b,
            "account_sid": raw["account_sid"],
            "api_key": raw.get("api_key") or None,
            "region": raw.get("region") or None,
            "auth_token_set": bool(raw.get("auth_token")),
            "api_secret_set": bool(raw.get("api_secret")),
        }

    async def delete(self, b: str) -> bool:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(keys.account(b))
            pipe.srem(keys.ACCOUNTS, b)
            pipe.incr(keys.ACCOUNTS_VERSION)
            deleted, _, _ = await pipe.execute()
        return int(deleted) == 1

    async def version(self) -> int:
        """Bumped by every change of any business's account (workers' caches follow it)."""
        raw = await self._redis.get(keys.ACCOUNTS_VERSION)
        return int(raw) if raw is not None else 0

    async def businesses(self) -> list[str]:
        return sorted(texts(await self._redis.smembers(keys.ACCOUNTS)))
