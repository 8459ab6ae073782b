"""``callrec check`` against the real services (the test Redis, the Twilio simulator,
moto's S3 server): a configuration that passes, then each failure on its own; and the
web's warning when ``PUBLIC_BASE_URL`` is unset."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from callrec.embedded_redis import free_port
from callrec.local_s3 import LocalS3
from callrec.preflight import Check, failed, judge_account, run_checks, version_check
from config.settings import load_settings
from tests.stack import JWT_SECRET, ROOT, Stack
from twilio_sim import Simulator

Env = dict[str, str]


@pytest.fixture
def good_env(tmp_path: Path, redis_url: str, sim: Simulator) -> Env:
    return {
        "REDIS_URL": redis_url,
        "CALLREC_JWT_SECRET": JWT_SECRET,
        "TWILIO_ACCOUNT_SID": sim.account_sid,
        "TWILIO_AUTH_TOKEN": sim.auth_token,
        "TWILIO_API_BASE": sim.base_url,
        "PUBLIC_BASE_URL": "https://callrec.example.com",
        "RECORDINGS_DIR": str(tmp_path / "recordings"),
        "RECORDINGS_DIR_SHARED": "true",
    }


def checks(env: Env) -> dict[str, Check]:
    return {row.name: row for row in run_checks(load_settings(env))}


@pytest.fixture
def eviction_policy(redis_url: str) -> Iterator[Callable[[str], None]]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    before = str(client.config_get("maxmemory-policy")["maxmemory-policy"])

    def set_policy(policy: str) -> None:
        client.config_set("maxmemory-policy", policy)

    yield set_policy
    client.config_set("maxmemory-policy", before)
    client.close()


def test_a_good_configuration_passes_every_check(good_env: Env, tmp_path: Path) -> None:
    rows = checks(good_env)
    assert not failed(list(rows.values()))
    assert {name: row.status for name, row in rows.items()} == {
        "secret CALLREC_JWT_SECRET": "ok",
        "secret TWILIO_ACCOUNT_SID": "ok",
        "secret TWILIO_AUTH_TOKEN": "ok",
        "redis reachable": "ok",
        "redis version": "ok",
        "redis maxmemory-policy": "ok",
        "redis persistence": "warn",  # the test server runs without AOF
        "redis cluster": "ok",
        "storage disk": "ok",
        "storage shared by web and workers": "ok",
        "PUBLIC_BASE_URL": "ok",
        "twilio credentials": "ok",
        "business twilio accounts": "ok",
    }
    assert rows["redis version"].detail.startswith(("valkey ", "redis "))
    assert rows["redis cluster"].detail == "single server"
    assert "accepted, account active" in rows["twilio credentials"].detail
    assert list((tmp_path / "recordings").iterdir()) == []  # the probe file is gone


def test_the_command_prints_a_table_and_its_exit_status_says_pass_or_fail(
    good_env: Env,
) -> None:
    def run(env: Env) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "callrec", "check"],
            env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    passed = run(good_env)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    lines = passed.stdout.splitlines()
    assert lines[0].split() == ["check", "status", "detail"]
    assert any(line.startswith("twilio credentials") and " ok " in line for line in lines)
    assert lines[-1] == "callrec check passed"

    broken = run({**good_env, "TWILIO_AUTH_TOKEN": "wrong"})
    assert broken.returncode == 1
    row = next(line for line in broken.stdout.splitlines() if line.startswith("twilio"))
    assert " FAIL " in row and "rejected (401)" in row
    assert broken.stdout.splitlines()[-1] == "callrec check FAILED"

    unusable = run({**good_env, "STORAGE": "s3"})  # no S3_BUCKET: settings refuse to load
    assert unusable.returncode == 2
    assert unusable.stderr.strip() == (
        "callrec check: missing required environment variable S3_BUCKET"
    )


TWILIO = "twilio credentials"


@pytest.mark.parametrize(
    ("change", "row", "detail"),
    [
        ({"REDIS_URL": ""}, "redis reachable", "REDIS_URL is unset"),
        ({"CALLREC_JWT_SECRET": ""}, "secret CALLREC_JWT_SECRET", "unset"),
        ({"CALLREC_JWT_SECRET": "short"}, "secret CALLREC_JWT_SECRET", "5 characters"),
        ({"TWILIO_AUTH_TOKEN": ""}, "secret TWILIO_AUTH_TOKEN", "unset"),
        ({"TWILIO_AUTH_TOKEN": "wrong"}, "twilio credentials", "rejected (401)"),
        ({"PUBLIC_BASE_URL": ""}, "PUBLIC_BASE_URL", "every webhook is answered 403"),
        ({"PUBLIC_BASE_URL": "http://callrec.example.com"}, "PUBLIC_BASE_URL", "https://"),
        ({"RECORDINGS_DIR_SHARED": "false"}, "storage shared by web and workers", "=false"),
        (
            {"RECORDINGS_DIR_SHARED": "", "DYNO": "web.1"},
            "storage shared by web and workers",
            "on Heroku every web and worker process has its own disk",
        ),
    ],
)
def test_each_misconfiguration_fails_its_row(
    good_env: Env, change: Env, row: str, detail: str
) -> None:
    rows = checks({**good_env, **change})
    assert rows[row].status == "FAIL" and detail in rows[row].detail, rows[row]
    failing = {r.name for r in rows.values() if r.status == "FAIL"}
    # A missing token also fails the credentials request; nothing else fails along.
    assert failing == ({row, TWILIO} if row == "secret TWILIO_AUTH_TOKEN" else {row})


def test_unreachable_redis_and_twilio_fail(good_env: Env) -> None:
    closed = free_port()
    rows = checks(
        {
            **good_env,
            "REDIS_URL": f"redis://:hunter2@127.0.0.1:{closed}/0",
            "TWILIO_API_BASE": f"http://127.0.0.1:{closed}",
        }
    )
    assert rows["redis reachable"].status == "FAIL"
    assert f"redis://127.0.0.1:{closed}/0" in rows["redis reachable"].detail
    assert "hunter2" not in rows["redis reachable"].detail  # the password is not printed
    assert "redis version" not in rows
    assert rows["twilio credentials"].status == "FAIL"
    assert "unreachable" in rows["twilio credentials"].detail


def test_an_evicting_redis_fails(good_env: Env, eviction_policy: Callable[[str], None]) -> None:
    eviction_policy("allkeys-lru")
    row = checks(good_env)["redis maxmemory-policy"]
    assert row.status == "FAIL" and row.detail.startswith("allkeys-lru")


def test_an_unwritable_recordings_dir_fails(good_env: Env, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    row = checks({**good_env, "RECORDINGS_DIR": str(blocker / "recordings")})["storage disk"]
    assert row.status == "FAIL" and "not writable" in row.detail


def test_disk_storage_not_known_to_be_shared_is_a_warning(good_env: Env) -> None:
    row = checks({**good_env, "RECORDINGS_DIR_SHARED": ""})["storage shared by web and workers"]
    assert row.status == "warn" and "RECORDINGS_DIR_SHARED=true" in row.detail


def test_a_loopback_public_url_on_http_is_a_warning(good_env: Env) -> None:
    row = checks({**good_env, "PUBLIC_BASE_URL": "http://127.0.0.1:8000"})["PUBLIC_BASE_URL"]
    assert row.status == "warn"


def test_s3_bucket_probe_passes_then_fails_for_a_missing_bucket(
    good_env: Env, local_s3: LocalS3, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**good_env, **local_s3.env(s3_bucket), "S3_PREFIX": "recs/"}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, env[name])  # boto3 reads its credentials itself
    del env["RECORDINGS_DIR_SHARED"]  # irrelevant with S3
    rows = checks(env)
    assert rows["storage s3 bucket"].status == "ok"
    assert rows["storage cache dir"].status == "ok"
    assert rows["storage shared by web and workers"].status == "ok"
    assert not failed(list(rows.values()))
    assert local_s3.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0

    missing = checks({**env, "S3_BUCKET": "no-such-bucket-here"})["storage s3 bucket"]
    assert missing.status == "FAIL"
    assert missing.detail.startswith("put no-such-bucket-here/recs/.callrec-check-")
    assert "NoSuchBucket" in missing.detail


def test_versions_and_account_states_are_judged() -> None:
    assert version_check("redis", "6.0.16").status == "FAIL"
    assert version_check("redis", "6.2.0").status == "ok"
    assert version_check("valkey", "8.1.8").status == "ok"
    suspended = httpx.Response(200, json={"sid": "AC1", "status": "suspended"})
    assert judge_account(suspended, "AC1") == Check(
        "twilio credentials", "FAIL", "AC1: accepted, but the account is suspended"
    )
    assert judge_account(httpx.Response(503), "AC1").status == "FAIL"


def test_web_warns_once_when_public_base_url_is_unset(stack: Stack) -> None:
    stack.start_web(PUBLIC_BASE_URL="")
    stack.start_web()
    unset_log, set_log = (p.log() for p in stack.procs)
    assert unset_log.count("PUBLIC_BASE_URL is unset") == 1, unset_log
    assert "PUBLIC_BASE_URL is unset" not in set_log


def test_business_accounts_need_the_key_they_were_sealed_with(good_env: Env) -> None:
    import asyncio

    from cryptography.fernet import Fernet
    from redis.asyncio import Redis as AsyncRedis

    from tenants.accounts import AccountRegistry, TwilioAccount
    from tenants.secrets import SecretBox

    key = Fernet.generate_key().decode()
    name = "business twilio accounts"

    async def register() -> None:
        client = AsyncRedis.from_url(good_env["REDIS_URL"])
        await AccountRegistry(client, SecretBox(key)).put("b1", TwilioAccount("AC" + "1" * 32, "t"))
        await client.aclose()

    asyncio.run(register())
    assert checks({**good_env, "CALLREC_SECRETS_KEY": key})[name].status == "ok"
    missing = checks(good_env)[name]
    assert (missing.status, missing.detail) == ("FAIL", "1 registered: CALLREC_SECRETS_KEY unset")
    other = Fernet.generate_key().decode()
    changed = checks({**good_env, "CALLREC_SECRETS_KEY": other})[name]
    assert (
        changed.status == "FAIL" and "do not decrypt" in changed.detail and "b1" in changed.detail
    )


def test_a_cluster_reports_its_layout_and_how_the_shards_spread(
    good_env: Env, cluster_url: str
) -> None:
    from calls import keys
    from tests.clients import sync_redis

    env = {**good_env, "REDIS_URL": cluster_url}
    rows = checks({**env, "EVENT_STREAM_SHARDS": "3"})
    assert not failed(list(rows.values())), rows
    assert rows["redis cluster"].detail == "cluster mode, state ok, 3 primaries"
    assert rows["redis cluster slots"].status == "ok"
    assert rows["redis cluster replicas"].status == "ok"
    assert "(3 replicas)" in rows["redis cluster replicas"].detail
    shards = rows["redis event stream shards"]
    assert shards.status == "ok" and shards.detail.endswith("3 primaries: 1/1/1"), shards
    six = checks({**env, "EVENT_STREAM_SHARDS": "6"})["redis event stream shards"]
    assert six.status == "ok" and six.detail.endswith("2/2/2"), six
    one = checks({**env, "EVENT_STREAM_SHARDS": "1"})["redis event stream shards"]
    assert one.status == "warn" and "set EVENT_STREAM_SHARDS to 3" in one.detail, one
    four = checks({**env, "EVENT_STREAM_SHARDS": "4"})["redis event stream shards"]
    assert four.status == "warn" and "uneven" in four.detail, four
    assert sorted(four.detail.split(": ")[1].split("/")) == ["1", "1", "2"]
    # The accounts row reads callrec's keys on whichever primary holds them.
    client = sync_redis(cluster_url)
    for b in ("b1", "b2", "b3"):
        client.sadd(keys.ACCOUNTS, b)
        client.hset(keys.account(b), "auth_token", "sealed with another key")
    client.close()
    sealed = checks({**env, "CALLREC_SECRETS_KEY": "dGVzdC1rZXktZm9yLWNhbGxyZWMtdGVuYW50cy0zMmI="})
    row = sealed["business twilio accounts"]
    assert row.status == "FAIL" and row.detail.startswith("3 do not decrypt"), row


def test_a_cluster_without_replicas_warns_and_one_missing_slots_fails(good_env: Env) -> None:
    """A cluster of its own (its coverage is broken on purpose)."""
    from callrec.embedded_cluster import EmbeddedCluster
    from tests.stack import wait_for

    with EmbeddedCluster(primaries=3, replicas=0) as cluster:
        env = {**good_env, "REDIS_URL": cluster.url, "EVENT_STREAM_SHARDS": "3"}
        rows = checks(env)
        assert rows["redis cluster"].status == "ok"
        replicas = rows["redis cluster replicas"]
        assert replicas.status == "warn" and "no replica behind" in replicas.detail
        assert replicas.detail.count("127.0.0.1:") == 3, replicas
        assert not failed(list(rows.values()))
        # The node REDIS_URL names gives up one of its slots: nobody serves it.
        (first, *_rest) = cluster.nodes
        with cluster.client(first) as node:
            node.execute_command("CLUSTER DELSLOTS", 0)

            def down() -> bool:
                return str(node.cluster("info").get("cluster_state")) == "fail"

            wait_for(down, "the node to see its cluster down")
        rows = checks(env)
        assert rows["redis cluster"].status == "FAIL"
        assert "cluster_state fail" in rows["redis cluster"].detail
        slots = rows["redis cluster slots"]
        assert slots.status == "FAIL" and slots.detail.startswith("1 of 16384"), slots
