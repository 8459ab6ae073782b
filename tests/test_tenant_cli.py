"""``callrec twilio-account``, ``secrets-key``, ``token --admin`` and the accounts in
``callrec status``, as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import jwt
import redis
from cryptography.fernet import Fernet

from calls import keys
from tests.stack import JWT_SECRET, ROOT
from tests.tenant_helpers import SECRETS_KEY

SID = "AC" + "5" * 32
TOKEN = "f00d" * 8
SECRET = "s3cr3t-" + "z" * 20


def cli(
    redis_url: str, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "CALLREC_"))}
    base.update(PYTHONPATH=str(ROOT), REDIS_URL=redis_url, CALLREC_JWT_SECRET=JWT_SECRET, **env)
    return subprocess.run(
        [sys.executable, "-m", "callrec.cli", *args],
        env=base, capture_output=True, text=True, timeout=60, check=False, input=stdin,
    )  # fmt: skip


def test_set_show_delete_never_print_or_store_secrets_in_clear(redis_url: str) -> None:
    args = ["twilio-account", "set", "--business", "b1", "--account-sid", SID]
    done = cli(
        redis_url,
        *args,
        "--auth-token", TOKEN, "--api-key", "SK" + "6" * 32, "--api-secret", SECRET,
        "--region", "ie1",
        CALLREC_SECRETS_KEY=SECRETS_KEY,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = cli(redis_url, "twilio-account", "show", "--business", "b1")
    assert shown.returncode == 0
    for out in (done, shown):
        assert f"account_sid={SID}" in out.stdout and "region=ie1" in out.stdout
        assert TOKEN not in out.stdout + out.stderr and SECRET not in out.stdout + out.stderr
    stored = redis.Redis.from_url(redis_url).hgetall(keys.account("b1"))
    assert TOKEN.encode() not in b"".join(v for v in stored.values() if isinstance(v, bytes))
    box = Fernet(SECRETS_KEY.encode())
    assert box.decrypt(stored[b"auth_token"]).decode() == TOKEN
    assert box.decrypt(stored[b"api_secret"]).decode() == SECRET
    status = cli(redis_url, "status")
    assert status.returncode == 0, status.stderr
    assert "b1" in status.stdout and SID in status.stdout and TOKEN not in status.stdout
    assert cli(redis_url, "twilio-account", "delete", "--business", "b1").returncode == 0
    gone = cli(redis_url, "twilio-account", "show", "--business", "b1")
    assert "uses the main account" in gone.stdout


def test_bad_registrations_are_one_clear_line(redis_url: str) -> None:
    base = ["twilio-account", "set", "--business", "b1"]
    no_key = cli(redis_url, *base, "--account-sid", SID, "--auth-token", TOKEN)
    assert no_key.returncode == 2 and "CALLREC_SECRETS_KEY" in no_key.stderr
    cases = [
        (["--account-sid", "AC12", "--auth-token", TOKEN], "account_sid"),
        (["--account-sid", SID, "--auth-token", ""], "auth_token"),
        (["--account-sid", SID, "--auth-token", TOKEN, "--region", "xx9"], "region"),
        (["--account-sid", SID, "--auth-token", TOKEN, "--api-key", "SK1"], "api_key"),
    ]
    for extra, field in cases:
        done = cli(redis_url, *base, *extra, CALLREC_SECRETS_KEY=SECRETS_KEY)
        assert done.returncode == 2, (extra, done.stdout)
        assert field in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    bad_key = cli(redis_url, "status", CALLREC_SECRETS_KEY="not-a-key")
    assert bad_key.returncode == 2
    assert bad_key.stderr.strip().startswith("callrec status: CALLREC_SECRETS_KEY must be")
    assert not redis.Redis.from_url(redis_url).exists(keys.account("b1"))


def test_secrets_key_and_admin_token(redis_url: str) -> None:
    key = cli(redis_url, "secrets-key").stdout.strip()
    Fernet(key.encode())  # a usable Fernet key
    assert cli(redis_url, "secrets-key").stdout.strip() != key
    admin = cli(redis_url, "token", "--admin", "--ttl", "60")
    claims = jwt.decode(admin.stdout.strip(), JWT_SECRET, algorithms=["HS256"])
    assert claims["admin"] is True and "business_id" not in claims
    neither = cli(redis_url, "token")
    assert neither.returncode == 2 and "--business" in neither.stderr


def test_secrets_can_come_from_stdin(redis_url: str) -> None:
    args = ["twilio-account", "set", "--business", "b2", "--account-sid", SID]
    done = cli(
        redis_url,
        *args, "--auth-token", "-", "--api-key", "SK" + "6" * 32, "--api-secret", "-",
        stdin=f"{TOKEN}\n{SECRET}\n",
        CALLREC_SECRETS_KEY=SECRETS_KEY,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stored = redis.Redis.from_url(redis_url).hgetall(keys.account("b2"))
    box = Fernet(SECRETS_KEY.encode())
    assert box.decrypt(stored[b"auth_token"]).decode() == TOKEN
    assert box.decrypt(stored[b"api_secret"]).decode() == SECRET
    empty = cli(redis_url, *args, "--auth-token", "-", stdin="", CALLREC_SECRETS_KEY=SECRETS_KEY)
    assert empty.returncode == 2 and "auth_token" in empty.stderr
