"""A local S3-compatible server (moto's standalone server) for ``callrec dev --local-s3``
and the tests: a subprocess on a free loopback port, in memory, gone when it stops."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from callrec.embedded_redis import free_port
from callrec.local_server import LocalServer
from callrec.processes import stop_process

# moto checks no signatures unless told to; any key pair will do.
LOCAL_ACCESS_KEY = "local-access-key"
LOCAL_SECRET_KEY = "local-secret-key"
LOCAL_REGION = "us-east-1"


class LocalS3(LocalServer):
    def __init__(self, *, log_path: Path | None = None, start_timeout_s: float = 30.0) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, bucket: str) -> dict[str, str]:
        """What a callrec process needs to use ``bucket`` on this server."""
        return {
            "STORAGE": "s3",
            "S3_BUCKET": bucket,
            "S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
            "AWS_DEFAULT_REGION": LOCAL_REGION,
        }

    def start(self) -> None:
        try:
            import moto.server  # noqa: F401
        except ImportError:
            raise SystemExit(
                "a local S3 needs moto's server: pip install 'moto[server]' (make install does)"
            ) from None
        out = self.log_path.open("wb") if self.log_path else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            if self.log_path and not isinstance(out, int):
                out.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start")

    def client(self, access_key: str = LOCAL_ACCESS_KEY, secret_key: str = LOCAL_SECRET_KEY) -> Any:
        """A boto3 client of this server (S3 unless ``service`` says otherwise)."""
        return self.service_client("s3", access_key, secret_key)

    def service_client(
        self, service: str, access_key: str = LOCAL_ACCESS_KEY, secret_key: str = LOCAL_SECRET_KEY
    ) -> Any:
        import boto3

        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.url,
            region_name=LOCAL_REGION,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
        )

    def create_bucket(self, name: str) -> None:
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()

    def require_auth(self, after_requests: int) -> None:
        """From now on moto checks signatures and IAM policies, after ``after_requests``
        more unchecked requests (those create the users and keys)."""
        answer = httpx.post(
            f"{self.url}/moto-api/reset-auth", content=str(after_requests), timeout=10
        )
        answer.raise_for_status()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, grace_s=10)

    def cleanup(self) -> None:
        self.stop()  # in memory: nothing left behind
