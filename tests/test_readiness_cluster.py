"""``/readyz`` on a cluster (ingest/health.py): ready while the cluster says it serves,
even with a primary down (the businesses on its slots answer 503 per request, the rest
are served); not ready once the cluster itself is down. A cluster of its own: one of
its nodes is stopped for good."""

from __future__ import annotations

from pathlib import Path

import httpx
from redis.crc import key_slot

from callrec.embedded_cluster import EmbeddedCluster
from callrec.embedded_redis import EmbeddedRedis
from calls import keys
from calls.shards import ShardMap
from tests.helpers import call_sid, play, register
from tests.stack import Stack, wait_for
from twilio_sim import Simulator

SHARDS = 3


def served_by(cluster: EmbeddedCluster, node: EmbeddedRedis, key: str) -> bool:
    return cluster.node_of_slot(key_slot(key.encode())) is node


def business_on(cluster: EmbeddedCluster, node: EmbeddedRedis, prefix: str) -> str:
    """A business whose keys and event stream ``node`` serves."""
    for i in range(10_000):
        b = f"{prefix}{i}"
        if served_by(cluster, node, keys.slots(b)) and served_by(
            cluster, node, ShardMap(SHARDS).of(b).events
        ):
            return b
    raise AssertionError(f"no business of {prefix!r} on {node.port}")


def call_on(cluster: EmbeddedCluster, node: EmbeddedRedis) -> int:
    """A call number whose SID's owner key ``node`` serves."""
    return next(n for n in range(100, 10_000) if served_by(cluster, node, keys.owner(call_sid(n))))


def serve_what_is_left(cluster: EmbeddedCluster) -> None:
    """The cluster keeps serving the slots it has when a primary is lost for good (by
    default it refuses every command until each slot is served again)."""
    for node in cluster.alive():
        with cluster.client(node) as c:
            c.config_set("cluster-require-full-coverage", "no")


def flagged_failed(cluster: EmbeddedCluster, judge: EmbeddedRedis, node: EmbeddedRedis) -> bool:
    with cluster.client(judge) as c:
        nodes: dict[str, dict[str, object]] = c.cluster("nodes")
    entry = next(v for k, v in nodes.items() if k.endswith(f":{node.port}"))
    return "fail" in str(entry["flags"]).split(",")


def cluster_state(cluster: EmbeddedCluster, node: EmbeddedRedis) -> str:
    with cluster.client(node) as c:
        return str(c.cluster("info").get("cluster_state"))


def test_a_web_stays_ready_with_a_primary_down_until_the_cluster_is_down(
    tmp_path: Path, sim: Simulator
) -> None:
    with EmbeddedCluster(primaries=3, replicas=0) as cluster:
        stack = Stack.around(
            sim,
            tmp=tmp_path,
            redis_url=cluster.url,
            PREFETCH_ON_WEBHOOK="false",
            EVENT_STREAM_SHARDS=str(SHARDS),
        )
        try:
            web = stack.start_web()
            assert httpx.get(f"{web}/readyz", timeout=10).json() == {"ok": True, "redis": "ok"}
            # The node REDIS_URL names, which the web asked first at start.
            lost, survivor = cluster.nodes[0], cluster.nodes[1]
            on_lost = register(sim, web, business_on(cluster, lost, "lost"), 1)
            on_survivor = register(
                sim, web, business_on(cluster, survivor, "kept"), call_on(cluster, survivor)
            )
            # The businesses on the lost primary's slots cannot be served, the others can.
            serve_what_is_left(cluster)
            lost.stop()
            wait_for(lambda: flagged_failed(cluster, survivor, lost), "the primary marked failed")
            assert cluster_state(cluster, survivor) == "ok"
            ready = httpx.get(f"{web}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            kept = play(web, on_survivor.business_id, on_survivor.call_sid)
            assert kept.status_code == 202, kept.text
            missing = play(web, on_lost.business_id, on_lost.call_sid)
            assert missing.status_code == 503, missing.text
            assert missing.headers["Retry-After"]
            # A second primary lost: the one left is a minority, the cluster refuses every
            # command, and the web is not ready.
            cluster.nodes[2].stop()
            wait_for(lambda: cluster_state(cluster, survivor) == "fail", "the cluster down")
            down = httpx.get(f"{web}/readyz", timeout=10)
            assert down.status_code == 503 and down.headers["Retry-After"]
            assert down.json()["redis"] == "cluster down: 1 of 3 primaries say fail", down.text
        finally:
            stack.stop()


async def test_readiness_asks_the_cluster_not_one_node(cluster_url: str, server_url: str) -> None:
    """The probe itself, on the shared cluster and on one server."""
    from calls.redis_client import client_for
    from ingest.health import readiness

    for url, cluster in ((cluster_url, True), (server_url, False)):
        client = client_for(url, cluster=cluster, purpose="web")
        assert (await readiness(client)).ready
        await client.aclose()
    closed = client_for("redis://127.0.0.1:1", cluster=False, purpose="web")
    verdict = await readiness(closed)
    assert not verdict.ready and verdict.redis.startswith("unreachable")
    await closed.aclose()
