"""``callrec dev``: the whole stack on one machine, for trying callrec out.

Starts what is missing: a private Redis when ``REDIS_URL`` is unset, the Twilio
simulator (with demo calls sent through real signed webhooks) when
``TWILIO_ACCOUNT_SID`` is unset: two businesses, ``demo`` on the main account and
``demo-sub`` on a subaccount of it (found with ``TWILIO_SUBACCOUNTS=auto``); and with
``--local-s3`` an S3-compatible server (moto) with a bucket, so ``STORAGE=s3`` runs
without a cloud account; then the ``web`` and ``worker`` processes of the Procfile, as
child processes with the same commands.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from pathlib import Path

import httpx

from callrec.embedded_redis import EmbeddedRedis
from callrec.processes import stop_processes
from callrec.procfile import web_command, worker_command
from ingest.auth import issue_token

DEMO_BUSINESS = "demo"
SUBACCOUNT_BUSINESS = "demo-sub"
DEV_DIR = Path(".callrec-dev")
DEV_BUCKET = "callrec-dev"


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"callrec dev: web exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit("callrec dev: web did not become healthy")


def _start_local_s3(stack: contextlib.ExitStack, env: dict[str, str]) -> None:
    from callrec.local_s3 import LocalS3

    DEV_DIR.mkdir(parents=True, exist_ok=True)
    server = stack.enter_context(LocalS3(log_path=DEV_DIR / "moto.log"))
    bucket = env.get("S3_BUCKET") or DEV_BUCKET
    server.create_bucket(bucket)
    env.update(server.env(bucket))
    # Its own cache directory: disk-mode recordings are not objects in this bucket.
    env.setdefault("RECORDINGS_DIR", str((DEV_DIR / "s3-cache").resolve()))
    print(
        f"local S3 (moto, in memory): {server.url} bucket={bucket} "
        f"SERVE_S3_VIA={env.get('SERVE_S3_VIA', 'redirect')}"
    )


def run_dev(*, port: int, workers: int, demo_calls: int, local_s3: bool = False) -> int:
    env = dict(os.environ)
    stack = contextlib.ExitStack()
    with stack:
        if local_s3:
            _start_local_s3(stack, env)
        if not env.get("REDIS_URL"):
            data_dir = (DEV_DIR / "redis").resolve()
            data_dir.mkdir(parents=True, exist_ok=True)
            redis_server = stack.enter_context(EmbeddedRedis(data_dir=data_dir, appendonly=True))
            env["REDIS_URL"] = redis_server.url
            print(f"embedded redis: {redis_server.url} (data in {DEV_DIR / 'redis'})")
        simulator = None
        if not env.get("TWILIO_ACCOUNT_SID"):
            from twilio_sim import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, Simulator

            simulator = stack.enter_context(Simulator())
            simulator.latency_s = 0.5  # long enough to see a queue form in the page
            env.update(
                TWILIO_ACCOUNT_SID=DEMO_ACCOUNT_SID,
                TWILIO_AUTH_TOKEN=DEMO_AUTH_TOKEN,
                TWILIO_API_BASE=simulator.base_url,
            )
            # demo-sub's webhooks come signed by a subaccount, which callrec recognises by
            # asking the simulator with the main credentials.
            env.setdefault("TWILIO_SUBACCOUNTS", "auto")
            print(f"twilio simulator: {simulator.base_url}")
        base_url = f"http://127.0.0.1:{port}"
        env.setdefault("PUBLIC_BASE_URL", base_url)
        if not env.get("CALLREC_JWT_SECRET"):
            env["CALLREC_JWT_SECRET"] = secrets.token_hex(32)
        env.setdefault("RECORDINGS_DIR", str((DEV_DIR / "recordings").resolve()))

        procs: list[subprocess.Popen[bytes]] = []
        web = subprocess.Popen(web_command(port), env=env)
        procs.append(web)
        for _ in range(workers):
            procs.append(subprocess.Popen(worker_command(), env=env))

        stack.callback(stop_processes, procs, grace_s=30)
        _wait_healthy(base_url, web)
        if simulator is not None:
            _seed_demo(simulator, env["PUBLIC_BASE_URL"], demo_calls)
        token = issue_token(env["CALLREC_JWT_SECRET"], DEMO_BUSINESS, 12 * 3600)
        sub_line = ""
        if simulator is not None:
            sub_token = issue_token(env["CALLREC_JWT_SECRET"], SUBACCOUNT_BUSINESS, 12 * 3600)
            sub_line = (
                f"business '{SUBACCOUNT_BUSINESS}' (on a Twilio subaccount): "
                f"{base_url}/?token={sub_token}\n"
            )
        print(
            f"\ncallrec is running: {base_url}/?token={token}\n"
            f"API token for business '{DEMO_BUSINESS}' (12 h): {token}\n"
            f"{sub_line}"
            "Ctrl-C stops everything.",
            flush=True,
        )
        try:
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def _seed_demo(simulator: object, public_base: str, n: int) -> None:
    from twilio_sim import Simulator

    assert isinstance(simulator, Simulator)
    sub = simulator.add_account(SUBACCOUNT_BUSINESS, subaccount=True)
    _seed_business(simulator, public_base, DEMO_BUSINESS, None, n)
    _seed_business(simulator, public_base, SUBACCOUNT_BUSINESS, sub.sid, max(1, n // 2))


def _seed_business(
    simulator: object, public_base: str, business: str, account_sid: str | None, n: int
) -> None:
    """``n`` calls of ``business`` whose recordings are filed under ``account_sid`` (None:
    the main account), registered through webhooks that account signs."""
    import dataclasses

    from twilio_sim import Simulator, demo_recordings

    assert isinstance(simulator, Simulator)
    hooks = f"{public_base}/webhooks/twilio/{business}"
    now = time.time()
    for i, demo in enumerate(demo_recordings(business, n)):
        rec = dataclasses.replace(demo, account_sid=account_sid)
        simulator.add_recording(rec)
        stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(now - 600 * (n - i)))
        simulator.send_call_status(
            f"{hooks}/call-status",
            call_sid=rec.call_sid,
            timestamp=stamp,
            duration_s=rec.duration_s,
            sequence_number=1,
            account_sid=account_sid,
        )
        simulator.send_recording_status(f"{hooks}/recording-status", rec)
