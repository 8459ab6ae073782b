"""``GET /metrics``: Prometheus text, built from Redis at scrape time.

Multiprocess safety by design: nothing is counted in process memory. Counters and
histograms live in Redis hashes, one per event-stream shard (``calls/stats.py``),
that every web and worker process, on every host, increments and a scrape sums;
gauges are read live from the slot, queue and stream keys. So any web process answers
with the deployment-wide figures, and a scrape of several web processes (or one behind
a load balancer) sees the same numbers: sum them over ``instance`` and you double
count; use ``max`` or scrape one. This replaces prometheus-client's
``PROMETHEUS_MULTIPROC_DIR`` mode, which only merges processes sharing one disk and
misses workers on other hosts; prometheus-client still renders the text format.

Cache hits and misses on play are ``callrec_play_requests_total{result="hit"}`` (served
from storage) and ``{result="pending"}`` (not stored: 202, a download requested or
already under way).

With ``METRICS_TOKEN`` set, a scrape must send ``Authorization: Bearer <METRICS_TOKEN>``
(compared in constant time), else 401; unset, ``/metrics`` is open (keep it off the
public network then).

Per-business figures come from the index of businesses with live work
(``calls/live_businesses.py``): a scrape costs one round trip of two commands per
business with work, not per business ever seen. Per-business gauges have bounded
label cardinality: the ``TOP_BUSINESSES`` (20) with the most slots held plus requests
queued get a ``business_id`` label; the unlabelled totals cover every business.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.exceptions import ResponseError
from starlette.requests import Request
from starlette.responses import Response

from calls import keys, live_businesses, shards, stats
from calls.digits import ascii_digits
from calls.errors import Unauthorized
from calls.redis_client import RedisClient
from calls.shards import Shard
from ingest.account_metrics import AccountCollector
from ingest.state import app_state
from tenants.permits import usage

TOP_BUSINESSES = 20
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Snapshot(Collector):
    def __init__(
        self,
        counters: dict[str, float],
        per_business: list[tuple[str, int, int]],
        dead_letters: int,
        stream_pending: int,
        stream_lag: int,
    ) -> None:
        self.counters = counters
        self.per_business = per_business
        self.dead_letters = dead_letters
        self.stream_pending = stream_pending
        self.stream_lag = stream_lag

    def collect(self) -> Iterator[Metric]:
        c = self.counters
        plays = CounterMetricFamily(
            "callrec_play_requests", "Play and download requests by result", labels=["result"]
        )
        for result in ("hit", "pending", "not_found"):
            plays.add_metric([result], c.get(stats.play_field(result), 0.0))
        yield plays
        downloads = CounterMetricFamily(
            "callrec_downloads", "Twilio downloads by outcome", labels=["outcome"]
        )
        for outcome in ("ok", "retry", "failed"):
            downloads.add_metric([outcome], c.get(stats.download_field(outcome), 0.0))
        yield downloads
        lock_waits = CounterMetricFamily(
            "callrec_lock_waits",
            "Downloads that waited on another holder's file lock for the same recording, "
            "by what they found then (stored: no Twilio request needed; missing)",
            labels=["outcome"],
        )
        for outcome in stats.LOCK_WAIT_OUTCOMES:
            lock_waits.add_metric([outcome], c.get(stats.lock_wait_field(outcome), 0.0))
        yield lock_waits
        yield _histogram(
            "callrec_download_seconds",
            "Time from slot grant to the end of a download attempt",
            c,
            stats.SECONDS_PREFIX,
            stats.DOWNLOAD_BUCKETS_S,
        )
        yield _histogram(
            "callrec_download_bytes",
            "Size of each recording stored from Twilio",
            c,
            stats.BYTES_PREFIX,
            stats.DOWNLOAD_BUCKETS_BYTES,
        )
        responses = CounterMetricFamily(
            "callrec_twilio_responses",
            "Answers from Twilio (listing, media, CDN) by HTTP status",
            labels=["status"],
        )
        failures = CounterMetricFamily(
            "callrec_twilio_request_errors",
            "Requests to Twilio that got no answer, by kind (timeout, transport)",
            labels=["kind"],
        )
        for field, value in sorted(c.items()):
            if field.startswith(stats.TWILIO_PREFIX):
                label = field.removeprefix(stats.TWILIO_PREFIX)
                (responses if ascii_digits(label) else failures).add_metric([label], value)
        yield responses
        yield failures
        deletes = CounterMetricFamily(
            "callrec_twilio_deletes",
            "DELETEs of Twilio's copies: deleted, gone (no copy left), retry (failed, retried)",
            labels=["outcome"],
        )
        for outcome in ("deleted", "gone", "retry"):
            deletes.add_metric([outcome], c.get(stats.twilio_delete_field(outcome), 0.0))
        yield deletes
        erased = CounterMetricFamily(
            "callrec_recordings_erased", "Recordings erased, on request or by retention"
        )
        erased.add_metric([], c.get(stats.erase_field("recordings"), 0.0))
        yield erased
        in_use = GaugeMetricFamily("callrec_slots_in_use", "Download slots held, all businesses")
        in_use.add_metric([], sum(s for _, s, _ in self.per_business))
        yield in_use
        queued = GaugeMetricFamily("callrec_queued_requests", "Requests waiting for a slot")
        queued.add_metric([], sum(q for _, _, q in self.per_business))
        yield queued
        top = sorted(self.per_business, key=lambda row: row[1] + row[2], reverse=True)
        per_slots = GaugeMetricFamily(
            "callrec_business_slots_in_use",
            "Slots held, busiest businesses only",
            labels=["business_id"],
        )
        per_queue = GaugeMetricFamily(
            "callrec_business_queued_requests",
            "Queue length, busiest businesses only",
            labels=["business_id"],
        )
        for b, s, q in top[:TOP_BUSINESSES]:
            if s or q:
                per_slots.add_metric([b], s)
                per_queue.add_metric([b], q)
        yield per_slots
        yield per_queue
        dead = GaugeMetricFamily("callrec_dead_letters", "Entries in the dead-letter stream")
        dead.add_metric([], self.dead_letters)
        yield dead
        pending = GaugeMetricFamily(
            "callrec_stream_pending", "Event stream entries read but not acknowledged"
        )
        pending.add_metric([], self.stream_pending)
        yield pending
        lag = GaugeMetricFamily("callrec_stream_lag", "Event stream entries not yet read")
        lag.add_metric([], self.stream_lag)
        yield lag


def _histogram(
    name: str, doc: str, c: dict[str, float], prefix: str, bounds: tuple[float, ...]
) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    running = 0.0
    for bound in bounds:
        running += c.get(f"{prefix}:{bound}", 0.0)
        buckets.append((str(bound), running))
    running += c.get(f"{prefix}:inf", 0.0)
    buckets.append(("+Inf", running))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=c.get(f"{prefix}:sum", 0.0))


async def _per_business(
    redis: RedisClient, registered: tuple[Shard, ...]
) -> list[tuple[str, int, int]]:
    found: set[str] = set()
    for shard in registered:
        found |= set(await live_businesses.generations(redis, shard.live))
    businesses = sorted(found)
    async with redis.pipeline(transaction=False) as pipe:
        for b in businesses:
            pipe.scard(keys.slots(b))
            pipe.llen(keys.queue(b))
        counts = await pipe.execute()
    return [(b, int(counts[2 * i]), int(counts[2 * i + 1])) for i, b in enumerate(businesses)]


async def _stream_figures(redis: RedisClient, registered: tuple[Shard, ...]) -> tuple[int, int]:
    """Pending entries and lag, summed over the shards' streams."""
    pending = lag = 0
    for shard in registered:
        try:
            groups = await redis.xinfo_groups(shard.events)
        except ResponseError:  # no stream yet
            continue
        for group in groups:
            if group["name"] in (keys.EVENTS_GROUP, keys.EVENTS_GROUP.encode()):
                pending += int(group["pending"])
                lag += int(group.get("lag") or 0)
    return pending, lag


def _check_scraper(request: Request, metrics_token: str | None) -> None:
    if metrics_token is None:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    sent = value.strip().encode() if scheme.lower() == "bearer" else b""
    if not hmac.compare_digest(sent, metrics_token.encode()):
        raise Unauthorized("/metrics wants Authorization: Bearer <METRICS_TOKEN>")


async def metrics(request: Request) -> Response:
    state = app_state(request)
    _check_scraper(request, state.settings.metrics_token)
    redis = state.redis
    registered = await shards.registered(redis, state.shards)
    pending, lag = await _stream_figures(redis, registered)
    snapshot = _Snapshot(
        counters=await stats.snapshot(redis, [s.stats for s in registered]),
        per_business=await _per_business(redis, registered),
        dead_letters=int(await redis.xlen(keys.DEAD_LETTERS)),
        stream_pending=pending,
        stream_lag=lag,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(snapshot)
    max_per_account = state.settings.twilio.max_concurrent_per_account
    registry.register(AccountCollector(await usage(redis, max_per_account)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
