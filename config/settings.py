"""Settings, read once from the environment into frozen objects and passed down.

Nothing else in callrec reads ``os.environ``: entry points call :func:`load_settings`
and hand the result to whatever they build.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

StorageKind = Literal["disk", "s3"]
# PaaS platforms recognised by a variable each sets in every process it runs; on all of
# them, every web and worker process has its own disk.
PLATFORM_MARKERS = (("DYNO", "Heroku"), ("RENDER_SERVICE_ID", "Render"), ("FLY_APP_NAME", "Fly.io"))
ServeS3Via = Literal["redirect", "proxy"]
ServeVia = Literal["app", "x-accel", "signed"]


class SettingsError(Exception):
    """A variable is missing or malformed; the message names it."""


# Twilio's regional API hosts (region + edge, per Twilio's regional REST API guide); a
# region's credentials are only ever sent to its own host.
REGION_API_BASES = {
    "ie1": "https://api.dublin.ie1.twilio.com",
    "au1": "https://api.sydney.au1.twilio.com",
}
SubaccountMode = Literal["off", "auto"]


@dataclass(frozen=True, slots=True)
class TwilioSettings:
    account_sid: str | None
    auth_token: str | None
    api_base: str
    # region -> API base; TWILIO_REGION_API_BASES overrides entries (tests point them at
    # a simulator on loopback), regions missing from it are refused at registration.
    region_api_bases: Mapping[str, str] = field(default_factory=lambda: dict(REGION_API_BASES))
    max_concurrent_per_account: int = 20
    subaccounts: SubaccountMode = "off"
    # A Fernet key (URL-safe base64 of 32 bytes), checked at start; None: no business
    # may register its own account.
    secrets_key: str | None = None

    def api_base_for(self, region: str | None) -> str:
        """The API base requests of an account in ``region`` go to (None: the default)."""
        return self.region_api_bases[region] if region else self.api_base


@dataclass(frozen=True, slots=True)
class S3Settings:
    bucket: str
    prefix: str
    endpoint_url: str | None
    serve_via: ServeS3Via
    cache_max_bytes: int | None
    # SigV4 signs the region; R2 wants "auto", AWS the bucket's own region.
    region: str


@dataclass(frozen=True, slots=True)
class RedisTls:
    """How a ``rediss://`` URL's certificate is checked (unused for ``redis://``)."""

    ca_file: Path | None  # None: the system's trusted CAs
    verify: bool  # False accepts any certificate (a managed Redis's self-signed one)


@dataclass(frozen=True, slots=True)
class RedisPool:
    """The command pool of a web or worker process: at most ``max_connections`` open;
    a command finding them all busy waits up to ``wait_s`` for one, then fails (a 503
    on the web, a retry in the worker)."""

    max_connections: int
    wait_s: int


@dataclass(frozen=True, slots=True)
class SignedUrlSettings:
    """SERVE_VIA=signed: the key of the media URLs plays redirect to, and their lifetime."""

    secret: str
    ttl_s: int


@dataclass(frozen=True, slots=True)
class WorkerTuning:
    """Knobs beyond the contract; defaults suit production, tests shorten them."""

    backoff_base_ms: int
    twilio_read_timeout_s: int
    reconcile_interval_ms: int
    claim_min_idle_ms: int
    shutdown_grace_s: int


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    """What happens to recordings after their download (lifecycle/)."""

    delete_from_twilio: bool  # DELETE Twilio's copy once callrec's is durable
    retention_days: int | None  # erase recordings of calls older than this
    call_retention_days: int | None  # drop call records older than this
    retention_batch: int  # calls looked at per business and tick (bounded work)
    lifecycle_interval_ms: int  # how often workers look for due deletions and expiries


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str | None
    redis_tls: RedisTls
    twilio: TwilioSettings
    public_base_url: str | None
    jwt_secret: str | None
    storage: StorageKind
    recordings_dir: Path
    # RECORDINGS_DIR_SHARED: whether every web and worker process sees the same
    # RECORDINGS_DIR (one host, or one shared volume). None = not said; `callrec check`
    # then judges from the platform. STORAGE=disk needs it, STORAGE=s3 does not.
    recordings_dir_shared: bool | None
    platform: str | None  # the PaaS this runs on, when one is recognised
    s3: S3Settings | None
    serve_via: ServeVia
    signed_urls: SignedUrlSettings | None  # set exactly when serve_via == "signed"
    max_slots_per_business: int
    inflight_ttl_s: int
    queued_ttl_s: int
    prefetch_on_webhook: bool
    download_max_attempts: int
    log_format: Literal["text", "json"]
    worker: WorkerTuning
    sse_keepalive_s: int  # idle /api/events streams get a comment this often
    sse_max_streams: int  # open /api/events streams on one web process
    sse_max_streams_per_business: int  # ... of them for one business
    redis_pool: RedisPool
    event_stream_shards: int  # work streams (calls/shards.py); 1 = the original layout
    metrics_token: str | None  # set: /metrics wants "Authorization: Bearer <it>"
    lifecycle: LifecycleSettings

    @property
    def inflight_ttl_ms(self) -> int:
        return self.inflight_ttl_s * 1000


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self._env.get(name, "").strip()
        return value or default

    def required(self, name: str) -> str:
        value = self.text(name)
        if value is None:
            raise SettingsError(f"missing required environment variable {name}")
        return value

    def integer(self, name: str, default: int, *, minimum: int = 1) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise SettingsError(f"{name} must be at least {minimum}, got {value}")
        return value

    def optional_integer(self, name: str) -> int | None:
        """A positive integer, or None when the variable is unset."""
        if self.text(name) is None:
            return None
        return self.integer(name, 0)

    def flag(self, name: str, default: bool) -> bool:
        value = self.optional_flag(name)
        return default if value is None else value

    def optional_flag(self, name: str) -> bool | None:
        raw = self.text(name)
        if raw is None:
            return None
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")

    def choice(self, name: str, default: str, allowed: Iterable[str]) -> str:
        raw = (self.text(name) or default).lower()
        options = tuple(allowed)
        if raw not in options:
            raise SettingsError(f"{name} must be one of {', '.join(options)}, got {raw!r}")
        return raw


def _redis_tls(read: _Reader, redis_url: str | None) -> RedisTls:
    ca_raw = read.text("REDIS_TLS_CA_FILE")
    tls = RedisTls(
        ca_file=Path(ca_raw) if ca_raw else None, verify=read.flag("REDIS_TLS_VERIFY", True)
    )
    if tls.ca_file is None:
        return tls
    if redis_url and not redis_url.startswith("rediss://"):
        # A CA given for a plain URL means the operator expects TLS that would not happen.
        raise SettingsError("REDIS_TLS_CA_FILE is set but REDIS_URL is not a rediss:// URL")
    if not tls.ca_file.is_file():
        raise SettingsError(f"REDIS_TLS_CA_FILE {tls.ca_file} does not exist")
    try:
        ssl.create_default_context(cafile=str(tls.ca_file))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise SettingsError(
            f"REDIS_TLS_CA_FILE {tls.ca_file} is not a PEM CA certificate ({exc})"
        ) from None
    return tls


def load_settings(env: Mapping[str, str] | None = None, *, require: Iterable[str] = ()) -> Settings:
    """Read every variable once; ``require`` names those this process cannot run without."""
    read = _Reader(os.environ if env is None else env)
    for name in require:
        read.required(name)

    storage = read.choice("STORAGE", "disk", ("disk", "s3"))
    s3 = None
    if storage == "s3":
        cache_raw = read.text("CACHE_MAX_BYTES")
        endpoint_url = read.text("S3_ENDPOINT_URL")
        region = read.text("AWS_REGION") or read.text("AWS_DEFAULT_REGION")
        s3 = S3Settings(
            bucket=read.required("S3_BUCKET"),
            prefix=read.text("S3_PREFIX", "") or "",
            endpoint_url=endpoint_url,
            serve_via=read.choice("SERVE_S3_VIA", "redirect", ("redirect", "proxy")),  # type: ignore[arg-type]
            cache_max_bytes=None if cache_raw is None else read.integer("CACHE_MAX_BYTES", 0),
            region=region or ("auto" if endpoint_url else "us-east-1"),
        )
    public_base = read.text("PUBLIC_BASE_URL")
    redis_url = read.text("REDIS_URL")
    serve_via = read.choice("SERVE_VIA", "app", ("app", "x-accel", "signed"))
    signed_urls = None
    if serve_via == "signed":
        signed_urls = SignedUrlSettings(
            secret=_signed_url_secret(read.required("SIGNED_URL_SECRET")),
            ttl_s=read.integer("SIGNED_URL_TTL_SECONDS", 300),
        )
    secrets_key = read.text("CALLREC_SECRETS_KEY")
    if secrets_key is not None:
        _check_fernet_key(secrets_key)
    return Settings(
        redis_url=redis_url,
        redis_tls=_redis_tls(read, redis_url),
        twilio=TwilioSettings(
            account_sid=read.text("TWILIO_ACCOUNT_SID"),
            auth_token=read.text("TWILIO_AUTH_TOKEN"),
            api_base=(read.text("TWILIO_API_BASE", "https://api.twilio.com") or "").rstrip("/"),
            region_api_bases=_region_bases(read.text("TWILIO_REGION_API_BASES")),
            max_concurrent_per_account=read.integer("TWILIO_MAX_CONCURRENT_PER_ACCOUNT", 20),
            subaccounts=read.choice("TWILIO_SUBACCOUNTS", "off", ("off", "auto")),  # type: ignore[arg-type]
            secrets_key=secrets_key,
        ),
        public_base_url=public_base.rstrip("/") if public_base else None,
        jwt_secret=read.text("CALLREC_JWT_SECRET"),
        storage=storage,  # type: ignore[arg-type]
        recordings_dir=Path(read.text("RECORDINGS_DIR", "./recordings") or "./recordings"),
        recordings_dir_shared=read.optional_flag("RECORDINGS_DIR_SHARED"),
        platform=next((name for var, name in PLATFORM_MARKERS if read.text(var)), None),
        s3=s3,
        serve_via=serve_via,  # type: ignore[arg-type]
        signed_urls=signed_urls,
        max_slots_per_business=read.integer("MAX_SLOTS_PER_BUSINESS", 3),
        inflight_ttl_s=read.integer("INFLIGHT_TTL_SECONDS", 120),
        queued_ttl_s=read.integer("QUEUED_TTL_SECONDS", 1200),
        prefetch_on_webhook=read.flag("PREFETCH_ON_WEBHOOK", True),
        download_max_attempts=read.integer("DOWNLOAD_MAX_ATTEMPTS", 5),
        log_format=read.choice("LOG_FORMAT", "text", ("text", "json")),  # type: ignore[arg-type]
        worker=WorkerTuning(
            backoff_base_ms=read.integer("DOWNLOAD_BACKOFF_BASE_MS", 1000),
            twilio_read_timeout_s=read.integer("TWILIO_READ_TIMEOUT_SECONDS", 30),
            reconcile_interval_ms=read.integer("RECONCILE_INTERVAL_MS", 5000),
            claim_min_idle_ms=read.integer("CLAIM_MIN_IDLE_MS", 30_000),
            shutdown_grace_s=read.integer("SHUTDOWN_GRACE_SECONDS", 20, minimum=0),
        ),
        sse_keepalive_s=read.integer("SSE_KEEPALIVE_SECONDS", 15),
        sse_max_streams=read.integer("SSE_MAX_STREAMS", 5000),
        sse_max_streams_per_business=read.integer("SSE_MAX_STREAMS_PER_BUSINESS", 200),
        redis_pool=RedisPool(
            max_connections=read.integer("REDIS_MAX_CONNECTIONS", 50),
            wait_s=read.integer("REDIS_POOL_WAIT_SECONDS", 2, minimum=0),
        ),
        event_stream_shards=read.integer("EVENT_STREAM_SHARDS", 1),
        metrics_token=read.text("METRICS_TOKEN"),
        lifecycle=_lifecycle(read),
    )


def _lifecycle(read: _Reader) -> LifecycleSettings:
    retention_days = read.optional_integer("RETENTION_DAYS")
    call_retention_days = read.optional_integer("CALL_RETENTION_DAYS")
    if call_retention_days is None:
        call_retention_days = retention_days
    if retention_days and call_retention_days and call_retention_days < retention_days:
        # A call dropped while its recording is kept would leave the recording unreachable.
        raise SettingsError(
            f"CALL_RETENTION_DAYS ({call_retention_days}) must be at least RETENTION_DAYS "
            f"({retention_days})"
        )
    return LifecycleSettings(
        delete_from_twilio=read.flag("DELETE_FROM_TWILIO", False),
        retention_days=retention_days,
        call_retention_days=call_retention_days,
        retention_batch=read.integer("RETENTION_BATCH", 100),
        lifecycle_interval_ms=read.integer("LIFECYCLE_INTERVAL_MS", 1000),
    )


# The secret is pasted into nginx.conf (secure_link_md5), where quotes, spaces and "$"
# would change the directive's meaning: keep it to the URL-safe base64 alphabet.
SIGNED_URL_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{32,}")


def _signed_url_secret(value: str) -> str:
    if value.startswith("CALLREC_SIGNED"):
        # deploy/nginx.conf's placeholder: nginx refuses every URL while it is in place.
        raise SettingsError("SIGNED_URL_SECRET is still deploy/nginx.conf's placeholder")
    if not SIGNED_URL_SECRET_PATTERN.fullmatch(value):
        raise SettingsError(
            "SIGNED_URL_SECRET must be at least 32 characters of A-Z a-z 0-9 _ - "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return value


def _check_fernet_key(value: str) -> None:
    import base64
    import binascii

    try:
        raw = base64.urlsafe_b64decode(value.encode())
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SettingsError(
            "CALLREC_SECRETS_KEY must be a Fernet key (URL-safe base64 of 32 bytes); "
            "`callrec secrets-key` prints one"
        )


def _region_bases(raw: str | None) -> dict[str, str]:
    """``ie1=https://...,au1=https://...`` over the built-in table."""
    bases = dict(REGION_API_BASES)
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        region, sep, base = item.partition("=")
        region, base = region.strip().lower(), base.strip().rstrip("/")
        if not sep or not region.isalnum() or not base.startswith(("http://", "https://")):
            raise SettingsError(
                f"TWILIO_REGION_API_BASES must be region=https://host pairs, got {item.strip()!r}"
            )
        bases[region] = base
    return bases


WEB_REQUIRED = ("REDIS_URL", "CALLREC_JWT_SECRET")
WORKER_REQUIRED = ("REDIS_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
