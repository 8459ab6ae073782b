"""A private Redis/Valkey cluster on loopback, for the tests and ``bench``: ``primaries``
primaries with ``replicas`` replicas each, from the same server binary as
:class:`~callrec.embedded_redis.EmbeddedRedis`, put together by the CLI shipped next to
it (``valkey-cli --cluster create``).

A short ``cluster-node-timeout`` lets a replica take over a killed primary within a few
seconds (the failover trials rely on it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from callrec.embedded_redis import EmbeddedRedis, EmbeddedRedisError, free_port, server_binary
from callrec.local_server import LocalServer

NODE_TIMEOUT_MS = 1500
# Each node also listens on its port + 10000 (the cluster bus).
BUS_OFFSET = 10000


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """``count`` ports free on loopback whose bus ports are free too, none of them
    another's bus port."""
    ports: list[int] = []
    taken: set[int] = set()
    while len(ports) < count:
        port = free_port()
        bus = port + BUS_OFFSET
        if bus > 65535 or {port, bus} & taken or not _bindable(bus):
            continue
        ports.append(port)
        taken |= {port, bus}
    return ports


def cli_binary() -> str:
    server = Path(server_binary())
    for name in ("valkey-cli", "redis-cli"):
        sibling = server.with_name(name)
        if sibling.is_file():
            return str(sibling)
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedRedisError("no valkey-cli or redis-cli next to the server binary or on PATH")


class EmbeddedCluster(LocalServer):
    """``with EmbeddedCluster() as c: c.url`` (any node's URL: clients discover the rest)."""

    def __init__(self, *, primaries: int = 3, replicas: int = 1) -> None:
        self.primaries = primaries
        self.replicas = replicas
        self.base_dir = Path(tempfile.mkdtemp(prefix="callrec-cluster-"))
        self.nodes: list[EmbeddedRedis] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_s: float = 60.0) -> None:
        for i, port in enumerate(cluster_ports((1 + self.replicas) * self.primaries)):
            data_dir = self.base_dir / f"node-{i}"
            data_dir.mkdir()
            node = EmbeddedRedis(
                port=port,
                data_dir=data_dir,
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(data_dir / "nodes.conf"),
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    # A replica whose primary was killed mid-sync still takes over.
                    "--cluster-replica-validity-factor",
                    "0",
                    # A (re)started replica syncs at once instead of after the default
                    # 5 s wait for more replicas: until it has, it holds nothing.
                    "--repl-diskless-sync-delay",
                    "0",
                ),
            )
            self.nodes.append(node)
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [
                cli_binary(),
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
        self.wait_healthy(timeout_s)

    def client(self, node: EmbeddedRedis) -> redis.Redis:
        return redis.Redis(port=node.port, socket_connect_timeout=0.5, socket_timeout=5)

    def alive(self) -> list[EmbeddedRedis]:
        return [n for n in self.nodes if n.running]

    def primary_nodes(self) -> list[EmbeddedRedis]:
        """The live nodes that are primaries now (a failover changes which)."""
        out = []
        for node in self.alive():
            with self.client(node) as c:
                if c.info("replication").get("role") == "master":
                    out.append(node)
        return out

    def node_of_slot(self, slot: int) -> EmbeddedRedis:
        with self.client(self.alive()[0]) as c:
            for start, end, primary, *_ in c.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise EmbeddedRedisError(f"no node serves slot {slot}")

    def node_id(self, node: EmbeddedRedis) -> str:
        with self.client(node) as c:
            return str(c.execute_command("CLUSTER MYID").decode())

    def begin_migration(self, slot: int, target: EmbeddedRedis) -> EmbeddedRedis:
        """Mark ``slot`` migrating from its primary to ``target`` (a primary); returns
        the source. Keys then move with :meth:`migrate_keys`."""
        source = self.node_of_slot(slot)
        with self.client(target) as t:
            t.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", self.node_id(source))
        with self.client(source) as s:
            s.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", self.node_id(target))
        return source

    def keys_in_slot(self, node: EmbeddedRedis, slot: int, count: int = 1000) -> list[bytes]:
        with self.client(node) as c:
            return list(c.execute_command("CLUSTER GETKEYSINSLOT", slot, count))

    def migrate_keys(self, source: EmbeddedRedis, target: EmbeddedRedis, keys: list[bytes]) -> None:
        """MIGRATE ``keys`` one by one (a key gone meanwhile is skipped by Redis)."""
        with self.client(source) as s:
            for key in keys:
                s.execute_command("MIGRATE", "127.0.0.1", target.port, key, 0, 5000)

    def finish_migration(self, slot: int, source: EmbeddedRedis, target: EmbeddedRedis) -> None:
        """Move what is left, then hand ``slot`` to ``target`` on every node."""
        while keys := self.keys_in_slot(source, slot):
            self.migrate_keys(source, target, keys)
        target_id = self.node_id(target)
        others = [n for n in self.primary_nodes() if n not in (source, target)]
        for node in (target, source, *others):
            with self.client(node) as c:
                c.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        """Every live node sees the cluster ok with every slot served, and every primary
        has a replica attached and in sync (when the cluster has replicas).

        In sync, not only attached: a replica restarted empty (these nodes keep nothing on
        disk) counts as attached while its first sync runs, and a failover to it then would
        lose its primary's whole data set, not the last writes a failover costs."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._healthy():
                return
            if time.monotonic() > deadline:
                raise EmbeddedRedisError("cluster did not become healthy in time")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            for node in self.alive():
                with self.client(node) as c:
                    info = c.cluster("info")
                    if info.get("cluster_state") != "ok":
                        return False
                    if int(info.get("cluster_slots_ok", 0)) != 16384:
                        return False
            if self.replicas:
                for node in self.primary_nodes():
                    with self.client(node) as c:
                        if int(c.info("replication").get("connected_slaves", 0)) < 1:
                            return False
                for node in self.alive():
                    with self.client(node) as c:
                        info = c.info("replication")
                    if info.get("role") == "slave" and (
                        info.get("master_link_status") != "up"
                        or int(info.get("master_sync_in_progress", 0))
                    ):
                        return False
            return True
        except redis.RedisError:
            return False

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
        shutil.rmtree(self.base_dir, ignore_errors=True)
