"""Accounts per business in-process against a real Redis: validation of registrations,
secrets sealed at rest, ownership of SIDs, which token signs a business's webhook, and
the settings behind them."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from calls import keys
from calls.errors import BadRequest, Forbidden
from config.settings import REGION_API_BASES, Settings, SettingsError, load_settings
from tenants.accounts import AccountRegistry, TwilioAccount, parse_account
from tenants.ownership import claim, owner_of
from tenants.routing import AccountRouter
from tenants.secrets import SecretBox, SecretsUnreadable
from tenants.webhook_auth import WebhookAccounts

SID = "AC" + "1" * 32
MAIN = "AC" + "2" * 32
KEY = Fernet.generate_key().decode()


def settings(**env: str) -> Settings:
    return load_settings({"TWILIO_ACCOUNT_SID": MAIN, "TWILIO_AUTH_TOKEN": "main-token", **env})


def test_registration_errors_name_their_field() -> None:
    regions = REGION_API_BASES.keys()
    good: dict[str, object] = {"account_sid": SID, "auth_token": "t"}
    assert parse_account(good, regions) == TwilioAccount(SID, "t")
    cases: list[tuple[dict[str, object], str]] = [
        ({"auth_token": "t"}, "account_sid"),
        ({**good, "account_sid": "AC" + "F" * 32}, "account_sid"),
        ({**good, "account_sid": 5}, "account_sid"),
        ({**good, "auth_token": "  "}, "auth_token"),
        ({**good, "auth_token": ["x"]}, "auth_token"),
        ({**good, "auth_token": "a\nb"}, "auth_token"),
        ({**good, "auth_token": "x" * 300}, "auth_token"),
        ({**good, "api_key": "SK" + "g" * 32}, "api_key"),
        ({**good, "api_key": "SK" + "1" * 32}, "api_secret"),
        ({**good, "api_secret": "s"}, "api_secret"),
        ({**good, "region": "us9"}, "region"),
        ({**good, "extra": 1}, "extra"),
    ]
    for data, field in cases:
        with pytest.raises(BadRequest, match=field):
            parse_account(data, regions)
    with_key = parse_account(
        {**good, "api_key": "SK" + "1" * 32, "api_secret": "sec-qq8", "region": "IE1"}, regions
    )
    assert with_key.basic_auth == ("SK" + "1" * 32, "sec-qq8") and with_key.region == "ie1"
    assert parse_account({**good, "auth_token": "tok-zz9"}, regions).basic_auth == (SID, "tok-zz9")
    # Secrets stay out of reprs (and so out of tracebacks and log lines).
    shown = repr(parse_account({**good, "auth_token": "tok-zz9", "api_key": "SK" + "1" * 32,
                                "api_secret": "sec-qq8"}, regions))  # fmt: skip
    assert "tok-zz9" not in shown and "sec-qq8" not in shown


def test_secret_box_round_trip_and_a_wrong_key() -> None:
    sealed = SecretBox(KEY).seal("tok")
    assert "tok" not in sealed and SecretBox(KEY).open(sealed) == "tok"
    with pytest.raises(SecretsUnreadable):
        SecretBox(Fernet.generate_key().decode()).open(sealed)


async def test_registry_seals_secrets_and_describes_without_them(redis: Redis) -> None:
    registry = AccountRegistry(redis, SecretBox(KEY))
    acct = TwilioAccount(SID, "tok-123", "SK" + "3" * 32, "sec-456", "au1")
    await registry.put("b1", acct)
    raw = b"".join(v for v in await redis.hvals(keys.account("b1")) if isinstance(v, bytes))
    assert b"tok-123" not in raw and b"sec-456" not in raw
    assert await registry.get("b1") == acct
    described = await registry.describe("b1")
    assert described is not None and "tok-123" not in str(described)
    assert described["region"] == "au1" and described["api_secret_set"] is True
    assert await registry.businesses() == ["b1"]
    with pytest.raises(BadRequest, match="CALLREC_SECRETS_KEY"):
        await AccountRegistry(redis, None).put("b2", acct)
    with pytest.raises(SecretsUnreadable):
        await AccountRegistry(redis, None).get("b1")
    assert await registry.delete("b1") and not await registry.delete("b1")
    assert await registry.get("b1") is None and await registry.businesses() == []


async def test_first_business_to_register_a_sid_owns_it(redis: Redis) -> None:
    call, rec = "CA" + "4" * 32, "RE" + "4" * 32
    assert await claim(redis, "a", call)
    assert await claim(redis, "a", call, rec)  # again, and a new one: still a's
    assert not await claim(redis, "b", call)
    assert not await claim(redis, "b", "CA" + "5" * 32, rec)
    assert await owner_of(redis, rec) == "a"
    assert await owner_of(redis, "CA" + "5" * 32) == "b"  # new SIDs are b's to keep
    assert await claim(redis, "b")  # nothing to claim


async def test_which_token_signs_a_business_webhook(redis: Redis) -> None:
    s = settings()
    registry = AccountRegistry(redis, SecretBox(KEY))
    accounts = WebhookAccounts(s.twilio, registry, None)
    assert await accounts.token_for("b1", MAIN) == "main-token"
    for bad in ("", "AC123", SID, "CA" + "1" * 32):
        with pytest.raises(Forbidden):
            await accounts.token_for("b1", bad)
    await registry.put("b1", TwilioAccount(SID, "own-token"))
    assert await accounts.token_for("b1", SID) == "own-token"
    # Once a business has its own account, the main one is not its account.
    with pytest.raises(Forbidden, match="not this business"):
        await accounts.token_for("b1", MAIN)
    assert await accounts.token_for("b2", MAIN) == "main-token"


def test_settings_of_accounts() -> None:
    s = settings()
    assert s.twilio.max_concurrent_per_account == 20
    assert s.twilio.subaccounts == "off"
    assert s.twilio.api_base_for("ie1") == "https://api.dublin.ie1.twilio.com"
    assert s.twilio.api_base_for("au1") == "https://api.sydney.au1.twilio.com"
    mapped = settings(TWILIO_REGION_API_BASES="ie1=http://127.0.0.1:9/, au1=http://127.0.0.1:8")
    assert mapped.twilio.api_base_for("ie1") == "http://127.0.0.1:9"
    assert settings(CALLREC_SECRETS_KEY=KEY).twilio.secrets_key == KEY
    bad = [
        ({"CALLREC_SECRETS_KEY": "short"}, "CALLREC_SECRETS_KEY"),
        ({"TWILIO_SUBACCOUNTS": "on"}, "TWILIO_SUBACCOUNTS"),
        ({"TWILIO_MAX_CONCURRENT_PER_ACCOUNT": "0"}, "TWILIO_MAX_CONCURRENT_PER_ACCOUNT"),
        ({"TWILIO_REGION_API_BASES": "ie1"}, "TWILIO_REGION_API_BASES"),
        ({"TWILIO_REGION_API_BASES": "ie1=ftp://x"}, "TWILIO_REGION_API_BASES"),
    ]
    for env, name in bad:
        with pytest.raises(SettingsError, match=name):
            settings(**env)


async def test_routes_follow_registration_changes(redis: Redis) -> None:
    s = settings(
        TWILIO_API_BASE="http://main.invalid",
        TWILIO_REGION_API_BASES="au1=http://au.invalid",
    )
    registry = AccountRegistry(redis, SecretBox(KEY))
    router = AccountRouter(s.twilio, registry, version_check_s=0)
    sub = "AC" + "7" * 32
    main_route = await router.route("b1")
    assert (main_route.account_sid, main_route.api_base) == (MAIN, "http://main.invalid")
    assert main_route.auth == (MAIN, "main-token")
    # A call that came from a subaccount (TWILIO_SUBACCOUNTS=auto): its path, main's keys.
    via_parent = await router.route("b1", sub)
    assert (via_parent.account_sid, via_parent.auth) == (sub, (MAIN, "main-token"))
    await registry.put("b1", TwilioAccount(SID, "own", "SK" + "8" * 32, "key-secret", "au1"))
    own = await router.route("b1", MAIN)
    assert (own.account_sid, own.api_base, own.auth) == (
        SID,
        "http://au.invalid",
        ("SK" + "8" * 32, "key-secret"),
    )
    await registry.delete("b1")
    assert (await router.route("b1")).account_sid == MAIN
