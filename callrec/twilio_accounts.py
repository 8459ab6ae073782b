"""``callrec twilio-account set|show|delete`` and ``callrec secrets-key``: the operator's
side of a business's own Twilio account. Secrets are never printed."""

from __future__ import annotations

import sys

from calls.errors import CallrecError
from calls.redis_client import connect
from config.settings import Settings
from tenants.accounts import AccountRegistry, parse_account
from tenants.secrets import new_key, secret_box


def print_new_key() -> int:
    print(new_key())
    return 0


def _describe_line(described: dict[str, object]) -> str:
    return " ".join(f"{k}={'-' if v is None else v}" for k, v in described.items())


async def set_account(settings: Settings, b: str, fields: dict[str, object]) -> int:
    assert settings.redis_url
    redis = await connect(settings, purpose="operator", wait=False)
    try:
        registry = AccountRegistry(redis, secret_box(settings))
        account = parse_account(fields, settings.twilio.region_api_bases)
        await registry.put(b, account)
        described = await registry.describe(b)
        assert described is not None
        print(_describe_line(described))
        return 0
    except CallrecError as exc:
        print(f"callrec twilio-account set: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        await redis.aclose()


async def show_account(settings: Settings, b: str | None) -> int:
    assert settings.redis_url
    redis = await connect(settings, purpose="operator", wait=False)
    try:
        registry = AccountRegistry(redis, None)  # describing needs no key: nothing decrypts
        businesses = [b] if b else await registry.businesses()
        shown = 0
        for business in businesses:
            described = await registry.describe(business)
            if described is not None:
                print(_describe_line(described))
                shown += 1
        if not shown:
            print(f"business {b} uses the main account" if b else "no business has its own account")
        return 0
    finally:
        await redis.aclose()


async def delete_account(settings: Settings, b: str) -> int:
    assert settings.redis_url
    redis = await connect(settings, purpose="operator", wait=False)
    try:
        deleted = await AccountRegistry(redis, None).delete(b)
        print(f"deleted the account of business {b}" if deleted else f"business {b} had none")
        return 0 if deleted else 1
    finally:
        await redis.aclose()
