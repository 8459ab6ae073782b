"""Containers for the tests, through testcontainers, on the local Docker engine.

Every container uses host networking (the engine runs with ``--bridge=none``; all
traffic stays on loopback), so a container reaches the test's Redis, simulator and S3
server at their ``127.0.0.1`` URLs and listens on a port picked with ``free_port()``.
Images come from :mod:`tests.images` (built locally: no registry is reachable).

Fixtures (registered in ``tests/conftest.py``): ``images`` (session; fails with one line
when no engine answers) and ``containers``, a :class:`Containers` that starts what a
test asks for and removes it all at the end:

    web = containers.web(env)                       # the Procfile's web, /healthz answered
    worker = containers.worker(env, redis_url)      # registered in the consumer group
    redis_url = containers.redis().url
    containers.app("check", env=env)                # any command of the image

``volumes`` map host paths to container paths (read-write): the image runs as uid/gid
10001, so a host directory shared by a web and a worker must be writable by it (e.g.
``os.chown(path, 10001, 10001)`` as root). A test file using these fixtures should carry
``pytest.mark.containers`` and a long ``pytest.mark.timeout``: the first test's setup may
wait for the images to build.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pytest
import redis
from docker.errors import NotFound

from callrec.embedded_redis import free_port
from tests import readiness
from tests.images import DockerUnavailable, Images, ensure_images
from tests.stack import wait_for

# Before testcontainers is imported: its reaper container would come from a registry.
os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"

from testcontainers.core.container import DockerContainer

START_TIMEOUT_S = 60.0


def container_env(env: Mapping[str, str]) -> dict[str, str]:
    """A process environment for a container: ``env`` without the host-only variables
    (paths of this machine, its virtualenv) that mean nothing inside the image."""
    host_only = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "HOME", "RECORDINGS_DIR")
    return {k: v for k, v in env.items() if k not in host_only}


@dataclass
class Running:
    """A started container: its testcontainers handle and what it serves."""

    name: str
    container: DockerContainer
    url: str = ""  # the web's base URL, or the Redis URL

    def logs(self) -> str:
        out, err = self.container.get_logs()
        return (out + err).decode(errors="replace")

    def kill(self) -> None:
        """``docker kill``: SIGKILL, no chance to hand anything back."""
        self.container.get_wrapped_container().kill()

    def running(self) -> bool:
        wrapped = self.container.get_wrapped_container()
        wrapped.reload()
        return bool(wrapped.status == "running")

    def exit_code(self, timeout_s: float = START_TIMEOUT_S) -> int:
        result = self.container.get_wrapped_container().wait(timeout=timeout_s)
        return int(result["StatusCode"])


@dataclass
class Containers:
    images: Images
    started: list[Running] = field(default_factory=list)

    def _start(
        self,
        name: str,
        image: str,
        command: list[str],
        env: Mapping[str, str] | None = None,
        volumes: Mapping[str, str] | None = None,
    ) -> Running:
        container = DockerContainer(image).with_kwargs(network_mode="host")
        container.with_command(command)
        for key, value in (env or {}).items():
            container.with_env(key, value)
        for host_path, container_path in (volumes or {}).items():
            container.with_volume_mapping(host_path, container_path, "rw")
        container.start()
        running = Running(name, container)
        self.started.append(running)
        return running

    def redis(self, *, appendonly: bool = False) -> Running:
        """The Valkey image on a free loopback port, answering PING."""
        port = free_port()
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", "/data"]
        args += ["--appendonly", "yes" if appendonly else "no"]
        running = self._start(f"redis{port}", self.images.redis, args)
        running.url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(running.url, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                if not running.running():
                    raise AssertionError(f"redis container exited:\n{running.logs()}") from None
                return False

        try:
            wait_for(answers, "the redis container to answer PING", START_TIMEOUT_S)
        finally:
            client.close()
        return running

    def app(
        self,
        *command: str,
        env: Mapping[str, str],
        volumes: Mapping[str, str] | None = None,
        name: str = "",
    ) -> Running:
        """The application image running ``command`` (``web``, ``worker``, ``check``...)."""
        n = sum(1 for r in self.started if r.name.startswith(command[0]))
        return self._start(name or f"{command[0]}{n}", self.images.app, list(command), env, volumes)

    def web(self, env: Mapping[str, str], volumes: Mapping[str, str] | None = None) -> Running:
        """The Procfile's web on a free port, once ``/healthz`` answers."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        full_env = {"PUBLIC_BASE_URL": url, **env, "PORT": str(port)}
        running = self.app("web", env=full_env, volumes=volumes)
        running.url = url
        healthy = readiness.answers(
            f"{url}/healthz", what="web container", alive=running.running, logs=running.logs
        )
        wait_for(healthy, "the web container to answer /healthz", START_TIMEOUT_S)
        return running

    def worker(self, env: Mapping[str, str], volumes: Mapping[str, str] | None = None) -> Running:
        """The Procfile's worker, once it reads every event stream (a new consumer in
        their group: containers on the host's network share its hostname and are all
        PID 1, so a container's consumer name is not known beforehand)."""
        client = redis.Redis.from_url(env["REDIS_URL"])
        before = readiness.group_consumers(client)
        running = self.app("worker", env=env, volumes=volumes)
        joined = readiness.joined(
            client, what="worker container", alive=running.running, logs=running.logs, before=before
        )
        try:
            wait_for(joined, "the worker container to join the consumer group", START_TIMEOUT_S)
        finally:
            client.close()
        return running

    def stop_all(self) -> None:
        for running in reversed(self.started):
            try:
                running.container.stop(force=True)
            except NotFound:  # removed already
                pass
        self.started.clear()


@pytest.fixture(scope="session")
def images() -> Images:
    problem = ""
    try:
        built, _reports = ensure_images()
    except DockerUnavailable as exc:
        problem = f"container tests need a Docker engine: {exc}"
    except subprocess.CalledProcessError as exc:
        tail = "\n".join(str(exc.stderr).splitlines()[-15:])
        problem = f"building the test images failed: {' '.join(exc.cmd[:3])}\n{tail}"
    if problem:  # failed outside the except blocks: one message, no traceback chain
        pytest.fail(problem, pytrace=False)
    return built


@pytest.fixture
def containers(images: Images) -> Iterator[Containers]:
    started = Containers(images)
    try:
        yield started
    finally:
        started.stop_all()
