"""Server processes for the bench: uvicorn with N workers, nginx, wrk; each on loopback,
each stopped when its stack stops. Built on tests/stack.py so the env is the tests' env."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from callrec.embedded_redis import free_port
from callrec.procfile import web_command
from tests.stack import ROOT, Proc, Stack, wait_for

DEPLOY_NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_uvicorn(
    stack: Stack, app: str, *, workers: int, name: str, **extra_env: str
) -> tuple[Proc, int]:
    """``uvicorn <app> --workers N`` on a free port (one listening socket, N processes)."""
    port = free_port()
    env = stack.env(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", **extra_env)
    # The Procfile's web command (what production runs), with N processes on one socket.
    args = [app if a == "ingest.app:app" else a for a in web_command(port, log_level="warning")]
    args += ["--workers", str(workers), "--no-access-log"]
    proc = stack.spawn(name, args, env)

    def up() -> bool:
        if not proc.alive():
            raise AssertionError(f"{name} exited:\n{proc.log()}")
        return _port_open(port)

    wait_for(up, f"{name} to listen")
    # --workers: the parent listens before its children import the app; wait for them.
    wait_for(lambda: len(child_pids(proc.popen.pid)) >= (workers if workers > 1 else 0), name)
    time.sleep(0.5 if workers > 1 else 0)
    return proc, port


def granian_binary() -> str | None:
    """granian next to this interpreter (the bench installs it), else on PATH."""
    here = Path(sys.executable).parent / "granian"
    return str(here) if here.exists() else shutil.which("granian")


def start_granian(
    stack: Stack, app: str, *, workers: int, name: str, **extra_env: str
) -> tuple[Proc, int]:
    """The same ASGI app under granian (Rust HTTP, uvloop) with N worker processes."""
    binary = granian_binary()
    assert binary is not None
    port = free_port()
    env = stack.env(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", **extra_env)
    args = [binary, "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--workers", str(workers), "--loop", "uvloop", "--http", "1", "--no-ws"]
    args += ["--log-level", "warning", "--no-access-log", "--workers-kill-timeout", "5", app]
    proc = stack.spawn(name, args, env)

    def up() -> bool:
        if not proc.alive():
            raise AssertionError(f"{name} exited:\n{proc.log()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, f"{name} to answer")
    wait_for(lambda: len(child_pids(proc.popen.pid)) >= workers, name)
    time.sleep(0.5)
    return proc, port


def child_pids(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else ""
    )
    if not found:
        raise SystemExit("nginx not found: run `make bench` (it installs nginx and wrk)")
    return found


def start_nginx(stack: Stack, name: str, server_block: str, *, workers: int) -> Proc:
    prefix = stack.tmp / name
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    # As root, nginx's workers would drop to "nobody", which cannot enter the 0700 temp
    # directories the recordings live in; keep them as the user that made those.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""{user}worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{server_block}
}}
"""
    )
    args = [nginx_binary(), "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
    proc = stack.spawn(name, args, dict(os.environ))
    port = int(re.search(r"listen (\d+)", server_block).group(1))  # type: ignore[union-attr]

    def up() -> bool:
        if not proc.alive():
            err = (prefix / "logs" / "error.log").read_text(errors="replace")
            raise AssertionError(f"{name} exited:\n{proc.log()}\n{err}")
        return _port_open(port)

    wait_for(up, f"{name} to listen")
    return proc


def nginx_direct_block(port: int, directory: Path) -> str:
    return f"""    server {{
        listen {port};
        sendfile on;
        tcp_nopush on;
        location /files/ {{
            alias {directory}/;
            types {{ }}
            default_type audio/mpeg;
        }}
    }}"""


def nginx_xaccel_block(
    port: int, upstream_port: int, recordings: Path, access_log: Path, signed_url_secret: str = ""
) -> str:
    """deploy/nginx.conf with this run's port, upstream, RECORDINGS_DIR, access log and
    (for SERVE_VIA=signed) SIGNED_URL_SECRET."""
    text = DEPLOY_NGINX_CONF.read_text()
    replacements = {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream_port};",
        "listen 8080;": f"listen {port};",
        "alias /srv/callrec/recordings/;": f"alias {recordings}/;",
        "access_log /var/log/nginx/callrec.access.log ": f"access_log {access_log} ",
    }
    if signed_url_secret:
        replacements['"CALLREC_SIGNED_URL_SECRET"'] = f'"{signed_url_secret}"'
    for shipped, local in replacements.items():
        assert shipped in text, f"deploy/nginx.conf no longer has {shipped!r}"
        text = text.replace(shipped, local)
    return text


WRK_LUA = """
local range_bytes = {range_bytes}
local size = {size}
wrk.method = "GET"
local auth = "{auth}"
request = function()
  -- wrk.format's headers replace wrk.headers (Host is copied back), so build them all here.
  local headers = {{}}
  if auth ~= "" then headers["Authorization"] = auth end
  if range_bytes > 0 then
    local blocks = math.floor(size / range_bytes)
    local start = math.random(0, blocks - 1) * range_bytes
    headers["Range"] = "bytes=" .. start .. "-" .. (start + range_bytes - 1)
  end
  return wrk.format(nil, "{path}", headers)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"bytes":%d,"duration_us":%d,"socket_errors":%d,' ..
    '"status_errors":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(
    tmp: Path,
    url: str,
    *,
    range_bytes: int,
    size: int,
    auth: str = "",
    connections: int = 32,
    threads: int = 2,
    duration_s: float = 5.0,
) -> dict[str, float]:
    """One wrk run; requests/s, bytes/s (body and headers, as wrk counts) and latency."""
    base, _, path = url.partition("//")[2].partition("/")
    script = tmp / "wrk.lua"
    script.write_text(
        WRK_LUA.format(range_bytes=range_bytes, size=size, auth=auth, path="/" + path)
    )
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk not found: run `make bench` (it installs nginx and wrk)")
    args = [
        binary,
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(duration_s))}s",
    ]
    args += ["-s", str(script), f"http://{base}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCHJSON "))
    raw = json.loads(line.removeprefix("BENCHJSON "))
    seconds = raw["duration_us"] / 1e6
    if raw["status_errors"] or raw["socket_errors"]:
        raise AssertionError(f"wrk against {url} saw errors: {raw}\n{out}")
    return {
        "requests_per_s": raw["requests"] / seconds,
        "bytes_per_s": raw["bytes"] / seconds,
        "requests": raw["requests"],
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)
