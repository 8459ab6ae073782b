"""The pods of a rendered deploy/kubernetes overlay, run as containers on the local
Docker engine: what the manifest says each pod runs, as far as one machine allows.

From the manifest: the command (Kubernetes' ``command`` replaces the image's entry
point, as ``--entrypoint`` does), the user and group of its securityContext, a read-only
root filesystem with ``/tmp`` as the only other writable place, the environment (its
ConfigMap, plus the test's values for the Secret's keys), and the recordings volume at
its mount path. The image is the test build of deploy/Dockerfile (tests/images.py).
Differences, forced by one machine: host networking (so the web's port is swapped for a
free one), a bind-mounted host directory for the volume, and a hostname per container,
as Kubernetes gives each pod (a worker's consumer name starts with hostname-pid, and
every container's process is pid 1: the hostname tells the workers apart in Redis).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis
from docker.errors import NotFound

from callrec.embedded_redis import free_port
from tests import readiness
from tests.images import Images
from tests.kube import Rendered, quantity_bytes
from tests.stack import wait_for

# Before testcontainers is imported: its reaper container would come from a registry.
os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"

from testcontainers.core.container import DockerContainer

START_TIMEOUT_S = 60.0
WEB, WORKER = "callrec-web", "callrec-worker"


@dataclass
class Pod:
    name: str
    hostname: str
    container: DockerContainer
    url: str = ""  # the web's base URL

    @property
    def pid(self) -> int:
        """PID 1 of the container (the Procfile's process itself) as this host sees it."""
        wrapped = self.container.get_wrapped_container()
        wrapped.reload()
        return int(wrapped.attrs["State"]["Pid"])

    @property
    def consumer(self) -> str:
        return f"{self.hostname}-1"

    def logs(self) -> str:
        out, err = self.container.get_logs()
        return (out + err).decode(errors="replace")

    def running(self) -> bool:
        wrapped = self.container.get_wrapped_container()
        wrapped.reload()
        return bool(wrapped.status == "running")

    def pause(self) -> None:
        self.container.get_wrapped_container().pause()

    def unpause(self) -> None:
        self.container.get_wrapped_container().unpause()

    def kill(self) -> None:
        """``docker kill``: SIGKILL, no chance to hand anything back."""
        self.container.get_wrapped_container().kill()


@dataclass
class Pods:
    images: Images
    overlay: Rendered
    recordings_dir: Path  # on this host, bind-mounted at the manifest's mount path
    secrets: Mapping[str, str]  # the Secret's keys the containers need
    started: list[Pod] = field(default_factory=list)

    def _start(
        self,
        deployment: str,
        hostname: str,
        env: Mapping[str, str],
        port: int = 0,
        command: list[str] | None = None,
    ) -> Pod:
        container_spec = self.overlay.container(deployment)
        pod_spec = self.overlay.pod_spec(deployment)
        security = pod_spec["securityContext"]
        repository, _tag = container_spec["image"].split(":", 1)
        assert self.images.app.split(":", 1)[0] == repository, "not the manifest's image"
        command = list(command or container_spec["command"])
        if port:
            command[command.index("--port") + 1] = str(port)
        mounts = {m["name"]: m["mountPath"] for m in container_spec.get("volumeMounts", [])}
        full_env: dict[str, str] = dict(self.overlay.config())
        for entry in container_spec.get("env", []):
            if entry["name"] in self.secrets:
                full_env[entry["name"]] = self.secrets[entry["name"]]
        full_env.update(env)
        container = DockerContainer(self.images.app).with_kwargs(
            network_mode="host",
            hostname=hostname,
            entrypoint=command,
            user=f"{security['runAsUser']}:{security['runAsGroup']}",
            group_add=[str(security["fsGroup"])],
            read_only=container_spec["securityContext"]["readOnlyRootFilesystem"],
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
        )
        # The manifest's emptyDir for /tmp, with its size limit.
        [tmp] = [v for v in pod_spec["volumes"] if v["name"] == "tmp"]
        container.with_tmpfs_mount(
            mounts["tmp"], f"size={quantity_bytes(tmp['emptyDir']['sizeLimit'])}"
        )
        for key, value in full_env.items():
            container.with_env(key, value)
        container.with_volume_mapping(str(self.recordings_dir), mounts["recordings"], "rw")
        container.start()
        pod = Pod(hostname, hostname, container)
        self.started.append(pod)
        return pod

    def web(self, **env: str) -> Pod:
        """The web pod, once ``/healthz`` answers (its startup probe)."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        pod = self._start(WEB, f"web-{len(self.started)}", {"PUBLIC_BASE_URL": url, **env}, port)
        pod.url = url
        probe = self.overlay.container(WEB)["startupProbe"]["httpGet"]["path"]
        healthy = readiness.answers(
            f"{url}{probe}", what="web container", alive=pod.running, logs=pod.logs
        )
        wait_for(healthy, "the web container's startup probe", START_TIMEOUT_S)
        return pod

    def worker(self, redis_url: str, **env: str) -> Pod:
        """A worker pod, once it has joined the consumer group."""
        hostname = f"worker-{len(self.started)}"
        client = redis.Redis.from_url(redis_url)
        pod = self._start(WORKER, hostname, env)
        joined = readiness.joined(
            client,
            what="worker container",
            alive=pod.running,
            logs=pod.logs,
            prefix=f"{pod.consumer}-",
        )
        try:
            wait_for(joined, "the worker container to join the consumer group", START_TIMEOUT_S)
        finally:
            client.close()
        return pod

    def exec_like(self, deployment: str, command: list[str], **env: str) -> tuple[int, str]:
        """``command`` in a container set up as ``deployment``'s pod (what ``kubectl exec``
        into one would run with); returns its exit status and output."""
        pod = self._start(deployment, f"exec-{len(self.started)}", env, command=command)
        status = pod.container.get_wrapped_container().wait(timeout=START_TIMEOUT_S)
        return int(status["StatusCode"]), pod.logs()

    def stop_all(self) -> None:
        for pod in reversed(self.started):
            try:
                pod.container.stop(force=True)
            except NotFound:
                pass
        self.started.clear()
