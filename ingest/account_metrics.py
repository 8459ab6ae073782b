"""Per Twilio account series of /metrics: permits in use, the effective limit (AIMD)
and 429s. Labelled by account SID for the ``TOP_ACCOUNTS`` busiest only (bounded
cardinality); the totals cover every account."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tenants.permits import AccountUsage

TOP_ACCOUNTS = 20


class AccountCollector(Collector):
    def __init__(self, accounts: list[AccountUsage]) -> None:
        self.accounts = accounts

    def collect(self) -> Iterator[Metric]:
        total = GaugeMetricFamily(
            "callrec_twilio_permits_in_use", "Requests in flight to Twilio, all accounts"
        )
        total.add_metric([], sum(a.in_use for a in self.accounts))
        yield total
        busiest = sorted(self.accounts, key=lambda a: (a.in_use, a.throttled), reverse=True)
        in_use = GaugeMetricFamily(
            "callrec_twilio_account_permits_in_use",
            "Requests in flight per Twilio account, busiest accounts only",
            labels=["account_sid"],
        )
        limit = GaugeMetricFamily(
            "callrec_twilio_account_limit",
            "Effective concurrency limit per account (lowered by 429s), busiest accounts only",
            labels=["account_sid"],
        )
        throttled = CounterMetricFamily(
            "callrec_twilio_account_throttled",
            "429 answers per Twilio account, busiest accounts only",
            labels=["account_sid"],
        )
        for a in busiest[:TOP_ACCOUNTS]:
            in_use.add_metric([a.account_sid], a.in_use)
            limit.add_metric([a.account_sid], a.limit)
            throttled.add_metric([a.account_sid], a.throttled)
        yield in_use
        yield limit
        yield throttled
