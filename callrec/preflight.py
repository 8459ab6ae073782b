"""``callrec check``: what a deployment needs, verified against the real services before
it takes traffic (a PaaS release phase, or by hand), printed as a table.

Each check is one row: ``ok``, ``warn`` (works, but read the note) or ``FAIL``. Any
``FAIL`` makes the exit status 1. The checks only read, except the storage probes, which
write one small object or file and delete it again.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from callrec.checks import Check, Status
from callrec.preflight_cluster import cluster_checks
from calls.redis_client import tls_advice, tls_failure, tls_options
from config.settings import Settings

__all__ = ["Check", "Status", "failed", "print_checks", "render", "run_checks"]

MIN_REDIS_VERSION = (6, 2)  # XAUTOCLAIM, which the worker's claim loop needs
MIN_SECRET_CHARS = 32  # HS256 wants a key at least as long as its 256-bit hash
TWILIO_TIMEOUT_S = 10.0
PROBE_PREFIX = ".callrec-check-"


def run_checks(settings: Settings) -> list[Check]:
    rows = list(_secrets(settings))
    rows += _redis(settings)
    rows += _storage(settings)
    rows.append(_disk_sharing(settings))
    rows.append(_public_base_url(settings))
    rows.append(_twilio(settings))
    rows.append(_business_accounts(settings))
    return rows


def failed(rows: list[Check]) -> bool:
    return any(row.status == "FAIL" for row in rows)


def render(rows: list[Check]) -> str:
    width = max(len(row.name) for row in rows)
    lines = [f"{'check':<{width}}  {'status':<6}  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{row.name:<{width}}  {row.status:<6}  {row.detail}" for row in rows]
    verdict = "FAILED" if failed(rows) else "passed"
    lines.append(f"\ncallrec check {verdict}")
    return "\n".join(lines)


def print_checks(settings: Settings) -> int:
    rows = run_checks(settings)
    print(render(rows), flush=True)
    return 1 if failed(rows) else 0


# --- secrets -----------------------------------------------------------------------------


def _secrets(settings: Settings) -> Iterator[Check]:
    secret = settings.jwt_secret
    if secret is None:
        yield Check("secret CALLREC_JWT_SECRET", "FAIL", "unset: the web cannot check tokens")
    elif len(secret) < MIN_SECRET_CHARS:
        yield Check(
            "secret CALLREC_JWT_SECRET",
            "FAIL",
            f"{len(secret)} characters; use at least {MIN_SECRET_CHARS} random ones",
        )
    else:
        yield Check("secret CALLREC_JWT_SECRET", "ok", f"set ({len(secret)} characters)")
    for name, value in (
        ("TWILIO_ACCOUNT_SID", settings.twilio.account_sid),
        ("TWILIO_AUTH_TOKEN", settings.twilio.auth_token),
    ):
        if value is None:
            yield Check(f"secret {name}", "FAIL", "unset: workers cannot fetch recordings")
        else:
            yield Check(f"secret {name}", "ok", "set")


# --- Redis -------------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def version_check(server: str, version: str) -> Check:
    if parse_version(version)[:2] < MIN_REDIS_VERSION:
        need = ".".join(map(str, MIN_REDIS_VERSION))
        return Check("redis version", "FAIL", f"{server} {version}; callrec needs {need} or later")
    return Check("redis version", "ok", f"{server} {version}")


def _redis(settings: Settings) -> list[Check]:
    if settings.redis_url is None:
        return [Check("redis reachable", "FAIL", "REDIS_URL is unset")]
    client = _node_client(settings, decode_responses=True)
    where = _redacted_url(settings.redis_url)
    try:
        client.ping()
        info = client.info()
    except redis.RedisError as exc:
        refused = tls_failure(exc)
        if refused is not None:
            return [Check("redis reachable", "FAIL", tls_advice(settings, refused))]
        return [Check("redis reachable", "FAIL", f"{where}: {exc}")]
    finally:
        client.close()
    rows = [Check("redis reachable", "ok", where)]
    if "valkey_version" in info:
        rows.append(version_check("valkey", str(info["valkey_version"])))
    else:
        rows.append(version_check("redis", str(info.get("redis_version", "?"))))
    policy = str(info.get("maxmemory_policy", "?"))
    if policy == "noeviction":
        rows.append(Check("redis maxmemory-policy", "ok", policy))
    else:
        rows.append(
            Check(
                "redis maxmemory-policy",
                "FAIL",
                f"{policy}: under memory pressure Redis would evict slots, queues and "
                "streams; set noeviction",
            )
        )
    aof = str(info.get("aof_enabled", "0")) == "1"
    if aof:
        rows.append(Check("redis persistence", "ok", "AOF on"))
    else:
        rdb = "RDB snapshots" if info.get("rdb_last_save_time") else "none"
        rows.append(
            Check(
                "redis persistence",
                "warn",
                f"AOF off ({rdb}): a restart loses the writes since the last snapshot; "
                "see deploy/README.md",
            )
        )
    if str(info.get("cluster_enabled", "0")) != "1":
        rows.append(Check("redis cluster", "ok", "single server"))
        return rows
    node = _node_client(settings, decode_responses=True)
    try:
        rows += cluster_checks(node, settings.event_stream_shards)
    except redis.RedisError as exc:
        rows.append(Check("redis cluster", "FAIL", f"{where}: layout unreadable: {exc}"))
    finally:
        node.close()
    return rows


def _node_client(settings: Settings, *, decode_responses: bool = False) -> redis.Redis:
    """A client of the one node (or server) REDIS_URL names."""
    assert settings.redis_url
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=5,
        socket_timeout=5,
        decode_responses=decode_responses,
        **tls_options(settings.redis_url, settings.redis_tls),
    )


def _data_client(settings: Settings) -> redis.Redis | RedisCluster:
    """A client for callrec's keys: on a cluster, one that follows them to their node."""
    node = _node_client(settings)
    try:
        cluster = int(node.info("cluster").get("cluster_enabled", 0)) == 1
    finally:
        node.close()
    if not cluster:
        return _node_client(settings)
    assert settings.redis_url
    return RedisCluster.from_url(
        settings.redis_url,
        socket_connect_timeout=5,
        socket_timeout=5,
        **tls_options(settings.redis_url, settings.redis_tls),
    )


def _redacted_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


# --- storage -----------------------------------------------------------------------------


def _storage(settings: Settings) -> list[Check]:
    rows = [_directory_probe(settings)]
    if settings.storage == "s3":
        rows.append(_bucket_probe(settings))
    return rows


def _directory_probe(settings: Settings) -> Check:
    """Write, fsync and delete a file in RECORDINGS_DIR (the store, or S3's cache)."""
    name = "storage disk" if settings.storage == "disk" else "storage cache dir"
    directory = settings.recordings_dir
    probe = directory / f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with probe.open("xb") as out:
            out.write(b"probe")
            out.flush()
            os.fsync(out.fileno())
        probe.unlink()
    except OSError as exc:
        return Check(name, "FAIL", f"RECORDINGS_DIR {directory} not writable: {exc}")
    return Check(name, "ok", f"{directory} writable")


def _bucket_probe(settings: Settings) -> Check:
    from botocore.exceptions import BotoCoreError, ClientError

    from storage.s3 import make_client

    s3 = settings.s3
    assert s3 is not None
    key = f"{s3.prefix}{PROBE_PREFIX}{uuid.uuid4().hex}"
    body = secrets.token_bytes(16)
    client = make_client(s3, max_pool_connections=1)
    step = "put"
    try:
        client.put_object(Bucket=s3.bucket, Key=key, Body=body)
        step = "get"
        got = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        step = "delete"
        client.delete_object(Bucket=s3.bucket, Key=key)
    except (BotoCoreError, ClientError) as exc:
        return Check("storage s3 bucket", "FAIL", f"{step} {s3.bucket}/{key}: {exc}")
    finally:
        client.close()
    if got != body:
        return Check("storage s3 bucket", "FAIL", f"{s3.bucket}: the probe read back differs")
    return Check("storage s3 bucket", "ok", f"{s3.bucket}: put, get and delete of a probe")


def _disk_sharing(settings: Settings) -> Check:
    """STORAGE=disk works only where every web sees the files every worker writes.

    Nothing in a process can see the other processes' disks, so this is judged from what
    is known: ``RECORDINGS_DIR_SHARED`` when set, else the platform (on Heroku, Render and
    Fly.io every process has a disk of its own), else a warning asking to say.
    """
    name = "storage shared by web and workers"
    if settings.storage == "s3":
        return Check(name, "ok", "STORAGE=s3: every host reads the bucket")
    if settings.recordings_dir_shared is True:
        return Check(name, "ok", "RECORDINGS_DIR_SHARED=true (one host or one shared volume)")
    if settings.recordings_dir_shared is False:
        reason = "RECORDINGS_DIR_SHARED=false"
    elif settings.platform is not None:
        reason = f"on {settings.platform} every web and worker process has its own disk"
    else:
        return Check(
            name,
            "warn",
            "STORAGE=disk: the web serves only what workers on its own disk wrote; "
            "set RECORDINGS_DIR_SHARED=true if they share it, else use STORAGE=s3",
        )
    detail = f"STORAGE=disk but {reason}: the web could never play a recording; use STORAGE=s3"
    return Check(name, "FAIL", detail)


# --- public URL and Twilio ---------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _public_base_url(settings: Settings) -> Check:
    name = "PUBLIC_BASE_URL"
    url = settings.public_base_url
    if url is None:
        return Check(
            name,
            "FAIL",
            "unset: behind a proxy or PaaS router Twilio's signatures are checked against "
            "the wrong URL and every webhook is answered 403",
        )
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return Check(name, "ok", url)
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return Check(name, "warn", f"{url}: plain http, fine on this machine only")
    return Check(name, "FAIL", f"{url}: must be the https:// URL Twilio calls")


def _twilio(settings: Settings) -> Check:
    """One authenticated GET of the account itself: cheap, and it proves the pair."""
    name = "twilio credentials"
    sid, token = settings.twilio.account_sid, settings.twilio.auth_token
    if sid is None or token is None:
        return Check(name, "FAIL", "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are needed")
    url = f"{settings.twilio.api_base}/2010-04-01/Accounts/{sid}.json"
    try:
        answer = httpx.get(url, auth=(sid, token), timeout=TWILIO_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return Check(name, "FAIL", f"{settings.twilio.api_base} unreachable: {exc}")
    return judge_account(answer, sid)


def _business_accounts(settings: Settings) -> Check:
    """Businesses with their own Twilio account need CALLREC_SECRETS_KEY, and the key
    their secrets were sealed with (a changed key leaves them unreadable)."""
    from cryptography.fernet import Fernet, InvalidToken

    from calls import keys
    from calls.redis_values import texts

    name = "business twilio accounts"
    # Without Redis the "redis reachable" row has failed already; this one cannot tell.
    if settings.redis_url is None:
        return Check(name, "warn", "not checked: no Redis")
    try:
        client = _data_client(settings)
    except (redis.RedisError, RedisClusterException):
        # A cluster client refuses to start while a slot has no primary (its own row).
        return Check(name, "warn", "not checked: Redis unreachable or its cluster down")
    try:
        businesses = texts(client.smembers(keys.ACCOUNTS))
        key = settings.twilio.secrets_key
        if not businesses:
            return Check(name, "ok", "none (every business uses the main account)")
        if key is None:
            return Check(name, "FAIL", f"{len(businesses)} registered: CALLREC_SECRETS_KEY unset")
        box = Fernet(key.encode())
        unreadable = []
        for b in sorted(businesses)[:1000]:
            sealed = client.hget(keys.account(b), "auth_token")
            try:
                box.decrypt(sealed if isinstance(sealed, bytes) else b"")
            except InvalidToken:
                unreadable.append(b)
    except redis.RedisError:
        return Check(name, "warn", "not checked: Redis unreachable")
    finally:
        client.close()
    if unreadable:
        detail = f"{len(unreadable)} do not decrypt with CALLREC_SECRETS_KEY (changed key?)"
        return Check(name, "FAIL", f"{detail}: {', '.join(unreadable[:5])}")
    return Check(name, "ok", f"{len(businesses)} registered, secrets readable")


def judge_account(answer: httpx.Response, sid: str) -> Check:
    name = "twilio credentials"
    if answer.status_code == 401:
        return Check(name, "FAIL", f"{sid}: rejected (401): check TWILIO_AUTH_TOKEN")
    if answer.status_code != 200:
        return Check(name, "FAIL", f"{sid}: {answer.status_code} from Twilio")
    status = _json_field(answer, "status")
    if status != "active":
        return Check(name, "FAIL", f"{sid}: accepted, but the account is {status}")
    return Check(name, "ok", f"{sid}: accepted, account active")


def _json_field(answer: httpx.Response, field: str) -> str:
    try:
        body: object = answer.json()
    except ValueError:
        return "unreadable"
    value = body.get(field) if isinstance(body, dict) else None
    return str(value) if value is not None else "unknown"
