"""Guarantee 10 on a real cluster (3 primaries, a replica each), with real processes: a
primary killed mid-run and a busy business's slot migrated mid-run lose no accepted
request, leave no slot held by nobody past ``INFLIGHT_TTL_SECONDS``, and keep a business
at 3 downloads at once (outside the failover window: deploy/README.md). One trial of
each here; ``make chaos`` runs more in a row (``CLUSTER_CHAOS_TRIALS``, 5 by default)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from callrec.embedded_cluster import EmbeddedCluster
from tests import cluster_trials
from tests.stack import Stack
from twilio_sim import Simulator


@pytest.fixture
def cluster_stack(
    tmp_path: Path, cluster_url: str, sim: Simulator, redis_cluster: EmbeddedCluster
) -> Iterator[Stack]:
    s = Stack.around(sim, tmp=tmp_path, redis_url=cluster_url)
    try:
        yield s
    finally:
        s.stop()
        redis_cluster.wait_healthy()  # the next test gets a whole cluster again


def check(figures: cluster_trials.Figures, *, failover: bool) -> None:
    print(f"CLUSTER_CHAOS failover={failover} {figures.summary()}", flush=True)
    assert figures.lost == 0
    assert figures.max_dead_member_s < cluster_trials.LEASE_S
    assert figures.max_lease_ms <= cluster_trials.LEASE_S * 1000
    assert figures.max_concurrent_outside_window <= cluster_trials.MAX_SLOTS
    if not failover:
        # A migration loses no write: the exact count never exceeds the cap.
        assert figures.max_concurrent <= cluster_trials.MAX_SLOTS


def trials() -> int:
    return int(os.environ.get("CLUSTER_CHAOS_TRIALS", "1"))


@pytest.mark.timeout(600)
def test_primary_killed_mid_run(
    cluster_stack: Stack, sim: Simulator, redis_cluster: EmbeddedCluster
) -> None:
    web = cluster_trials.prepare(cluster_stack, sim)
    figures = cluster_trials.Figures()
    for n in range(trials()):
        disturb = cluster_trials.failover(redis_cluster, figures)
        cluster_trials.run_trial(cluster_stack, sim, web, figures, disturb, n=n)
        redis_cluster.wait_healthy()
    check(figures, failover=True)


@pytest.mark.timeout(600)
def test_busy_slot_migrated_mid_run(
    cluster_stack: Stack, sim: Simulator, redis_cluster: EmbeddedCluster
) -> None:
    web = cluster_trials.prepare(cluster_stack, sim)
    figures = cluster_trials.Figures()
    for n in range(trials()):
        disturb = cluster_trials.migration(redis_cluster)
        cluster_trials.run_trial(cluster_stack, sim, web, figures, disturb, n=n)
    check(figures, failover=False)
