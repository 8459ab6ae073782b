"""``rediss://`` against a real TLS-speaking Redis (Debian's redis-server, certificates
made here): a web and a worker play a recording through it with REDIS_TLS_CA_FILE, the
SSE stream and the operator CLI read through it too; a CA that does not sign the server's
certificate stops every process at start with one line; REDIS_TLS_VERIFY=false accepts
the self-signed certificate; the cluster client speaks TLS to a cluster node."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from calls.errors import RedisTlsError
from calls.redis_client import connect
from config.settings import SettingsError, load_settings
from tests.helpers import play_until_stored, register
from tests.sse_client import SseReader
from tests.stack import ROOT, Stack, auth, wait_for
from tests.tls_redis import Authority, TlsRedis, make_authority
from twilio_sim import Simulator, media_bytes

B = "tls-biz"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Authority]:
    """The server's CA, and another CA that signs nothing the server shows."""
    directory = tmp_path_factory.mktemp("pki")
    return make_authority(directory, "callrec-test-ca"), make_authority(directory, "stranger-ca")


@pytest.fixture(scope="module")
def tls_server(
    pki: tuple[Authority, Authority], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsRedis]:
    with TlsRedis(tmp_path_factory.mktemp("tls-redis"), pki[0]) as server:
        yield server


def _settings(url: str, **env: str) -> dict[str, str]:
    return {"REDIS_URL": url, "CALLREC_JWT_SECRET": "s" * 32, **env}


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CALLREC_"))}
    return subprocess.run(
        [sys.executable, "-m", "callrec.cli", *args],
        env={**base, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_web_and_a_worker_play_through_rediss_with_the_ca(
    tls_server: TlsRedis, pki: tuple[Authority, Authority], sim: Simulator, tmp_path: Path
) -> None:
    ca = str(pki[0].cert_path)
    stack = Stack.around(sim, tmp=tmp_path, redis_url=tls_server.url, REDIS_TLS_CA_FILE=ca)
    try:
        web = stack.start_web(PREFETCH_ON_WEBHOOK="false")
        stack.start_worker()
        events = SseReader(f"{web}/api/events", auth(B))
        assert events.status == 200
        rec = register(sim, web, B, 1)
        assert play_until_stored(web, B, rec.call_sid).content == media_bytes(rec)
        # The live status went through the same TLS server to the SSE stream.
        wait_for(
            lambda: "ready" in [e.json()["status"] for e in events.statuses()], "ready over SSE"
        )
        events.close()
        status = _cli(["status", "--business", B], _settings(tls_server.url, REDIS_TLS_CA_FILE=ca))
        assert status.returncode == 0, status.stderr
        assert B in status.stdout
        check = _cli(["check"], _settings(tls_server.url, REDIS_TLS_CA_FILE=ca))
        assert any(
            line.split()[:3] == ["redis", "reachable", "ok"] for line in check.stdout.splitlines()
        ), check.stdout
        # Every client callrec opened spoke TLS: the server has no plain port at all.
        with tls_server.admin() as admin:
            assert admin.config_get("port") == {"port": "0"}
    finally:
        stack.stop()


def test_a_ca_that_does_not_sign_the_server_stops_every_process_with_one_line(
    tls_server: TlsRedis, pki: tuple[Authority, Authority], sim: Simulator, tmp_path: Path
) -> None:
    wrong = str(pki[1].cert_path)
    stack = Stack.around(sim, tmp=tmp_path, redis_url=tls_server.url, REDIS_TLS_CA_FILE=wrong)
    web = stack.spawn("web", [sys.executable, "-m", "uvicorn", "ingest.app:app",
                                "--port", "0"], stack.env())  # fmt: skip
    worker = stack.spawn("worker", [sys.executable, "-m", "consumers"], stack.env())
    try:
        assert web.popen.wait(timeout=60) != 0
        assert worker.popen.wait(timeout=60) == 2
    finally:
        stack.stop()
    expected = "Redis TLS certificate of 127.0.0.1:"
    for proc, prefix in ((web, "callrec web: "), (worker, "callrec worker: ")):
        lines = [line for line in proc.log().splitlines() if expected in line]
        assert len(lines) == 1, proc.log()
        assert prefix in lines[0], lines
        assert f"REDIS_TLS_CA_FILE {wrong} does not sign it" in lines[0]
        assert "Traceback" not in proc.log()
    status = _cli(["status"], _settings(tls_server.url, REDIS_TLS_CA_FILE=wrong))
    assert status.returncode == 2
    assert status.stderr.startswith("callrec status: Redis TLS certificate of 127.0.0.1:")
    assert len(status.stderr.strip().splitlines()) == 1
    check = _cli(["check"], _settings(tls_server.url, REDIS_TLS_CA_FILE=wrong))
    assert check.returncode == 1
    assert f"REDIS_TLS_CA_FILE {wrong} does not sign it" in check.stdout, check.stdout


async def test_verify_false_accepts_the_self_signed_certificate(tls_server: TlsRedis) -> None:
    # No CA given: the system's CAs do not sign the test CA, so verification refuses...
    checked = load_settings(_settings(tls_server.url))
    with pytest.raises(RedisTlsError, match="no CA the system trusts signs it"):
        await connect(checked, purpose="web")
    # ...and REDIS_TLS_VERIFY=false accepts it, for every purpose.
    unchecked = load_settings(_settings(tls_server.url, REDIS_TLS_VERIFY="false"))
    for purpose in ("web", "worker", "reader", "operator"):
        client = await connect(unchecked, purpose=purpose)
        try:
            assert await client.set(f"tls:{purpose}", "1") is True
            assert await client.get(f"tls:{purpose}") == b"1"
        finally:
            await client.aclose()


async def test_the_cluster_client_speaks_tls_to_a_cluster_node(
    pki: tuple[Authority, Authority], tmp_path: Path
) -> None:
    with TlsRedis(tmp_path, pki[0], cluster=True) as node:
        settings = load_settings(_settings(node.url, REDIS_TLS_CA_FILE=str(pki[0].cert_path)))
        client = await connect(settings, purpose="worker")
        try:
            assert isinstance(client, RedisCluster)
            await client.set("rec_slots:{tls}", "x")
            assert await client.get("rec_slots:{tls}") == b"x"
        finally:
            await client.aclose()
        wrong = load_settings(_settings(node.url, REDIS_TLS_CA_FILE=str(pki[1].cert_path)))
        with pytest.raises(RedisTlsError, match="does not sign it"):
            await connect(wrong, purpose="worker")


def test_tls_settings_are_checked_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(SettingsError, match=f"^REDIS_TLS_CA_FILE {missing} does not exist$"):
        load_settings(_settings("rediss://h:6379", REDIS_TLS_CA_FILE=str(missing)))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match="is not a PEM CA certificate"):
        load_settings(_settings("rediss://h:6379", REDIS_TLS_CA_FILE=str(garbage)))
    with pytest.raises(SettingsError, match="REDIS_URL is not a rediss:// URL"):
        load_settings(_settings("redis://h:6379", REDIS_TLS_CA_FILE=str(garbage)))
    with pytest.raises(SettingsError, match="REDIS_TLS_VERIFY must be true or false"):
        load_settings(_settings("rediss://h:6379", REDIS_TLS_VERIFY="maybe"))
    assert load_settings(_settings("rediss://h:6379")).redis_tls.verify is True
    # The web's entry point turns it into one line and exit status 2.
    web = _cli_web(_settings("rediss://h:6379", REDIS_TLS_CA_FILE=str(missing)))
    assert web.returncode == 2
    assert web.stderr.strip() == f"callrec web: REDIS_TLS_CA_FILE {missing} does not exist"


def _cli_web(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CALLREC_"))}
    return subprocess.run(
        [sys.executable, "-c", "import ingest.app"],
        env={**base, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
