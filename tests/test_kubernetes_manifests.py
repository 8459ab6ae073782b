"""deploy/kubernetes, checked offline: each overlay rendered by kustomize, every resource
validated against the Kubernetes API schemas (kubernetes-validate, strict: unknown fields
are errors) and the KEDA ScaledObject against KEDA's CRD schema, and what the pods run
compared with the Procfile, the settings code, the contract and the bench figures."""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Iterator
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject

from callrec.cli import main
from callrec.keda import LAG_PER_WORKER, render_patch
from calls import keys
from calls.shards import ShardMap
from config.settings import WEB_REQUIRED, WORKER_REQUIRED, load_settings
from consumers.worker import READ_BLOCK_MS
from ingest.factory import ROUTES
from tests.images import APP_REPO
from tests.kube import (
    COMPONENTS_DIR,
    KUBERNETES_DIR,
    OVERLAYS,
    ROOT,
    Doc,
    Rendered,
    quantity_bytes,
    render,
    render_overlay,
    secret_refs,
)

# The oldest Kubernetes these manifests are meant for (lifecycle.preStop.sleep is on by
# default from 1.30) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
WEB, WORKER = "callrec-web", "callrec-worker"
SECRET = "callrec-secrets"
# Variables read by KEDA's scaler from the worker's environment, not by callrec.
KEDA_ENV = {"REDIS_ADDRESS", "REDIS_PASSWORD"}
# Contract variables neither overlay sets, and why (deploy/README.md says the same).
LEFT_UNSET = {
    "S3_ENDPOINT_URL": "unset for AWS; R2 users add it (overlays/s3 says how)",
    "RETENTION_DAYS": "unset means keep recordings",
    "REDIS_TLS_CA_FILE": "a file: mount your CA and name it",
}
# After the grace period the worker cancels what is still running and hands each back
# to its queue (a few Redis calls per download), then closes its clients. Allowing
# this much for that keeps a slow Redis from turning a drain into a SIGKILL.
HANDBACK_MARGIN_S = 15
# The worker's memory limit must hold this many downloads at the bench's growth each.
WORKER_CONCURRENT_DOWNLOADS = 48
# redis-streams trigger metadata KEDA documents (keda.sh, Scalers, Redis Streams).
KEDA_REDIS_STREAMS_FIELDS = {
    "address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv",
    "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup",
    "pendingEntriesCount", "streamLength", "lagCount", "activationLagCount",
    "enableTLS", "unsafeSsl", "databaseIndex",
}  # fmt: skip
# redis-cluster-streams trigger metadata (keda.sh, Scalers, Redis Streams (supports Redis
# Cluster)): no database index, a list of node addresses.
KEDA_REDIS_CLUSTER_STREAMS_FIELDS = {
    "addresses", "hosts", "ports", "addressesFromEnv", "hostsFromEnv", "portsFromEnv",
    "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup",
    "pendingEntriesCount", "streamLength", "lagCount", "activationLagCount",
    "enableTLS", "unsafeSsl",
}  # fmt: skip
KEDA_FIELDS = {
    "redis-streams": KEDA_REDIS_STREAMS_FIELDS,
    "redis-cluster-streams": KEDA_REDIS_CLUSTER_STREAMS_FIELDS,
}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(render_overlay(request.param))


@pytest.fixture(scope="module")
def overlays() -> dict[str, Rendered]:
    return {name: Rendered(render_overlay(name)) for name in OVERLAYS}


# --- helpers ---------------------------------------------------------------------------


def contract_text() -> str:
    """The README carries the contract's configuration table (the repository is cloned
    alone in CI, without the shared contract beside it)."""
    return (ROOT / "README.md").read_text()


def _section(markdown: str, heading: str) -> str:
    """From ``heading`` to the next heading of its level or above."""
    start = markdown.index(heading)
    level = len(heading) - len(heading.lstrip("#"))
    after = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(markdown, start + len(heading))
    return markdown[start : after.start() if after else None]


_VAR = re.compile(r"`([A-Z][A-Z0-9_]+)`")


def contract_variables() -> set[str]:
    table = _section(contract_text(), "## Configuration")
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names.update(_VAR.findall(line.split("|")[1]))
    assert {"REDIS_URL", "STORAGE", "RECORDINGS_DIR", "CACHE_MAX_BYTES"} <= names
    return names


def readme_variables() -> set[str]:
    """Beyond the contract: README's tuning knobs and the S3 section's AWS variables."""
    readme = (ROOT / "README.md").read_text()
    names = set(_VAR.findall(_section(readme, "## Configuration")))
    names |= set(_VAR.findall(_section(readme, "## Storing recordings in S3")))
    assert {"SHUTDOWN_GRACE_SECONDS", "AWS_ACCESS_KEY_ID", "AWS_REGION"} <= names
    return names


def settings_variables() -> set[str]:
    """The variables config/settings.py reads (beyond the contract: e.g. tuning knobs)."""
    source = (ROOT / "config" / "settings.py").read_text()
    names = set(re.findall(r'(?:read\.\w+|required)\(\s*"([A-Z][A-Z0-9_]+)"', source))
    assert {"REDIS_URL", "STORAGE", "SHUTDOWN_GRACE_SECONDS"} <= names
    return names


def procfile() -> dict[str, list[str]]:
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip():
            name, command = line.split(":", 1)
            commands[name.strip()] = shlex.split(command)
    return commands


def dockerfile_final_stage() -> list[tuple[str, str]]:
    """deploy/Dockerfile's last stage (the image that runs) as (INSTRUCTION, arguments),
    continuation lines joined."""
    text = (ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def image_facts() -> dict[str, str]:
    """What the pods must agree with: the user's uid and gid, the exposed port, the
    environment the image sets, and its working directory."""
    facts: dict[str, str] = {}
    for word, rest in dockerfile_final_stage():
        if word == "RUN" and "useradd" in rest:
            facts["uid"], facts["gid"] = _number_after("--uid", rest), _number_after("--gid", rest)
        elif word in ("USER", "EXPOSE", "WORKDIR"):
            facts[word] = rest
        elif word == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", rest):
                facts[f"ENV {name}"] = value
    return facts


def _number_after(flag: str, command: str) -> str:
    match = re.search(rf"{flag} (\d+)", command)
    assert match, f"no {flag} in the Dockerfile's {command!r}"
    return match.group(1)


def bench_memory_mib() -> dict[str, tuple[float, float]]:
    """README's "Memory: 500 MB recording" table: process -> (peak, growth) in MiB."""
    section = _section((ROOT / "README.md").read_text(), "#### Memory: 500 MB recording")
    rows: dict[str, tuple[float, float]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"[\d.]+", cells[2]):
            rows[cells[0]] = (float(cells[2]), float(cells[3]))
    assert "worker downloading" in rows and "web, full GET" in rows, rows
    return rows


def container_env(rendered: Rendered, deployment: str) -> dict[str, str]:
    """What the container's process sees: the ConfigMap, then its own env entries, with
    a placeholder for each Secret key (so settings can be parsed as the pod would)."""
    container = rendered.container(deployment)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"].startswith("callrec-config")
        env.update(rendered.config())
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            env[entry["name"]] = PLACEHOLDER_SECRETS.get(entry["name"], "placeholder")
    return env


PLACEHOLDER_SECRETS = {
    "REDIS_URL": "redis://redis:6379/0",
    "REDIS_ADDRESS": "redis:6379",
    "CALLREC_JWT_SECRET": "k" * 32,
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "t" * 32,
    "CALLREC_SECRETS_KEY": "dGVzdC1rZXktZm9yLWNhbGxyZWMtdGVuYW50cy0zMmI=",  # a Fernet key
}


def recordings_mount(rendered: Rendered, deployment: str) -> tuple[str, Doc]:
    """(mount path, volume) of the recordings volume in one deployment."""
    pod = rendered.pod_spec(deployment)
    mounts = {m["name"]: m["mountPath"] for m in rendered.container(deployment)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "recordings" in mounts and "recordings" in volumes, f"{deployment}: no recordings"
    return mounts["recordings"], volumes["recordings"]


def _closed(schema: Any) -> None:
    """Make every object schema reject unknown properties, as the API server does for
    fields a CRD's structural schema does not declare."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            _closed(value)
    elif isinstance(schema, list):
        for value in schema:
            _closed(value)


def keda_scaledobject_errors(doc: Doc) -> list[str]:
    """Errors of ``doc`` against the ScaledObject schema of cloudcoil-models-keda, whose
    models are generated from KEDA's CRDs."""
    schema = ScaledObject.model_json_schema(by_alias=True)
    _closed(schema)
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def kubernetes_errors(doc: Doc) -> Iterator[str]:
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            what = f"{doc['kind']} {doc['metadata'].get('name')}"
            yield f"{what} (Kubernetes {version}): {exc.message}"


# --- rendering and schemas -------------------------------------------------------------


def test_each_overlay_renders_the_whole_deployment(overlay: Rendered) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in overlay.docs)
    expected = {
        ("Deployment", WEB), ("Deployment", WORKER), ("Service", WEB),
        ("PodDisruptionBudget", WEB), ("PodDisruptionBudget", WORKER),
        ("HorizontalPodAutoscaler", WEB), ("ScaledObject", WORKER),
    }  # fmt: skip
    assert expected <= set(kinds)
    assert len(overlay.all("ConfigMap")) == 1


def test_every_resource_is_valid_for_kubernetes(overlay: Rendered) -> None:
    errors = [
        error
        for doc in overlay.docs
        if doc["apiVersion"] != "keda.sh/v1alpha1"
        for error in kubernetes_errors(doc)
    ]
    assert errors == []


def test_the_kubernetes_validation_rejects_a_misspelt_field(overlays: dict[str, Rendered]) -> None:
    deployment = copy.deepcopy(overlays["shared-volume"].one("Deployment", WEB))
    probe = deployment["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = probe
    assert any("readynessProbe" in e for e in kubernetes_errors(deployment))


def test_the_base_alone_renders_and_is_valid() -> None:
    base = Rendered(render(KUBERNETES_DIR / "base"))
    assert [e for d in base.docs if d["kind"] != "ScaledObject" for e in kubernetes_errors(d)] == []


# --- the worker autoscaler (KEDA) ------------------------------------------------------


def test_scaledobject_is_valid_for_kedas_crd(overlay: Rendered) -> None:
    assert keda_scaledobject_errors(overlay.one("ScaledObject", WORKER)) == []


def test_the_keda_validation_rejects_a_misspelt_field(overlays: dict[str, Rendered]) -> None:
    scaled = copy.deepcopy(overlays["s3"].one("ScaledObject", WORKER))
    scaled["spec"]["minReplicas"] = scaled["spec"].pop("minReplicaCount")
    scaled["spec"]["triggers"][0]["metadata"]["lagCount"] = 50
    errors = keda_scaledobject_errors(scaled)
    assert any("minReplicas" in e for e in errors), errors
    assert any("lagCount" in e for e in errors), errors  # trigger metadata is strings only


def test_workers_scale_on_the_lag_of_their_own_consumer_group(overlay: Rendered) -> None:
    scaled = overlay.one("ScaledObject", WORKER)["spec"]
    assert scaled["scaleTargetRef"] == {"name": WORKER}  # kind defaults to Deployment
    assert scaled["minReplicaCount"] >= 1, "workers also run the repairs: never scale to zero"
    assert scaled["maxReplicaCount"] > scaled["minReplicaCount"]
    worker_env = {e["name"] for e in overlay.container(WORKER)["env"]}
    for trigger in scaled["triggers"]:
        assert trigger["type"] in KEDA_FIELDS, trigger["type"]
        meta = trigger["metadata"]
        fields = KEDA_FIELDS[trigger["type"]]
        assert set(meta) <= fields, set(meta) - fields
        assert meta["consumerGroup"] == keys.EVENTS_GROUP
        assert int(meta["lagCount"]) == LAG_PER_WORKER
        # KEDA resolves *FromEnv names in the scale target's container.
        from_env = {v for k, v in meta.items() if k.endswith("FromEnv")}
        assert {"addressFromEnv", "addressesFromEnv"} & set(meta) and from_env <= worker_env
        assert from_env == KEDA_ENV


def test_workers_scale_on_every_work_stream_of_the_deployment(overlay: Rendered) -> None:
    """Exactly the streams calls/shards.py computes for the overlay's EVENT_STREAM_SHARDS;
    on a cluster KEDA's cluster scaler, the lags summed (one worker per LAG_PER_WORKER
    unread entries in all, as with one stream)."""
    settings = load_settings(container_env(overlay, WORKER))
    count = settings.event_stream_shards
    scaled = overlay.one("ScaledObject", WORKER)["spec"]
    streams = [t["metadata"]["stream"] for t in scaled["triggers"]]
    assert streams == [s.events for s in ShardMap(count).current]
    if count == 1 and "advanced" not in scaled:
        [trigger] = scaled["triggers"]
        assert trigger["type"] == "redis-streams" and streams == [keys.EVENTS]
        return
    assert {t["type"] for t in scaled["triggers"]} == {"redis-cluster-streams"}
    names = [t["name"] for t in scaled["triggers"]]
    modifiers = scaled["advanced"]["scalingModifiers"]
    assert sorted(modifiers["formula"].split(" + ")) == sorted(names) and len(set(names)) == count
    assert modifiers["target"] == str(LAG_PER_WORKER)
    assert modifiers["metricType"] == "AverageValue"


def test_the_cluster_component_is_what_the_cli_prints(
    overlays: dict[str, Rendered], capsys: pytest.CaptureFixture[str]
) -> None:
    """The checked-in patch is `callrec keda-triggers` for the component's N (nobody
    edits stream names by hand), and the one-stream base agrees with callrec/keda.py."""
    rendered = overlays["s3-redis-cluster"]
    count = int(rendered.config()["EVENT_STREAM_SHARDS"])
    assert count > 1
    assert main(["keda-triggers", "--shards", str(count)]) == 0
    printed = capsys.readouterr().out
    patch = COMPONENTS_DIR / "redis-cluster-shards" / "worker-scaledobject.yaml"
    assert patch.read_text() == printed == render_patch(count)
    assert (
        yaml.safe_load(printed)["spec"]["triggers"]
        == rendered.one("ScaledObject", WORKER)["spec"]["triggers"]
    )
    [base] = Rendered(render(KUBERNETES_DIR / "base")).one("ScaledObject", WORKER)["spec"][
        "triggers"
    ]
    assert base["metadata"]["lagCount"] == str(LAG_PER_WORKER)
    assert main(["keda-triggers", "--shards", "0"]) == 2


def test_web_scales_on_cpu_and_nothing_else_scales_the_workers(overlay: Rendered) -> None:
    [hpa] = overlay.all("HorizontalPodAutoscaler")  # KEDA makes the worker's own
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": WEB}
    assert [m["resource"]["name"] for m in spec["metrics"]] == ["cpu"]
    assert spec["minReplicas"] >= 2  # one pod can go (PodDisruptionBudget) and one serves
    web_cpu = overlay.container(WEB)["resources"]["requests"]["cpu"]
    assert web_cpu, "CPU utilisation is measured against the request"
    for name in (WEB, WORKER):
        assert "replicas" not in overlay.one("Deployment", name)["spec"], (
            f"{name}: its autoscaler owns the replica count"
        )


# --- what the pods run -----------------------------------------------------------------


def test_commands_and_ports_are_the_procfiles(overlay: Rendered) -> None:
    processes = procfile()
    web = overlay.container(WEB)
    [port] = web["ports"]
    expected_web = [
        str(port["containerPort"]) if arg == "${PORT:-8000}" else arg for arg in processes["web"]
    ]
    assert web["command"] == expected_web
    assert "args" not in web
    worker = overlay.container(WORKER)
    assert worker["command"] == processes["worker"] and "args" not in worker
    assert "ports" not in worker, "the worker serves nothing"
    service = overlay.one("Service", WEB)["spec"]
    assert [p["targetPort"] for p in service["ports"]] == [port["name"]]


def test_probes_use_the_apps_health_routes(overlay: Rendered) -> None:
    paths = {getattr(route, "path", None) for route in ROUTES}
    web = overlay.container(WEB)
    port_name = web["ports"][0]["name"]
    probes = {
        kind: web[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == "/healthz"  # never restarted for a Redis outage
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"  # out of the Service while Redis is away
    for probe in probes.values():
        assert probe["path"] in paths and probe["port"] == port_name


def test_web_and_worker_run_the_same_image(overlay: Rendered) -> None:
    images = {overlay.container(name)["image"] for name in (WEB, WORKER)}
    assert len(images) == 1
    [image] = images
    repository, _, tag = image.partition(":")
    assert repository == APP_REPO and tag, image  # what tests/images.py builds


def test_pods_match_the_dockerfile(overlay: Rendered) -> None:
    facts = image_facts()
    assert facts["USER"] != "root"
    web = overlay.container(WEB)
    assert [str(p["containerPort"]) for p in web["ports"]] == [facts["EXPOSE"]]
    assert "${PORT:-" + facts["EXPOSE"] + "}" in procfile()["web"]
    assert overlay.config()["RECORDINGS_DIR"] == facts["ENV RECORDINGS_DIR"]
    for name in (WEB, WORKER):
        # The Procfile's module paths resolve from the image's working directory.
        assert "workingDir" not in overlay.container(name), facts["WORKDIR"]


def test_pods_run_as_the_images_non_root_user(overlay: Rendered) -> None:
    facts = image_facts()
    uid, gid = int(facts["uid"]), int(facts["gid"])
    for name in (WEB, WORKER):
        pod = overlay.pod_spec(name)["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == uid and pod["runAsGroup"] == gid
        assert pod["fsGroup"] == gid, "volumes must be writable by that user"
        container = overlay.container(name)["securityContext"]
        assert container["allowPrivilegeEscalation"] is False
        assert container["readOnlyRootFilesystem"] is True
        assert container["capabilities"]["drop"] == ["ALL"]


def test_worker_grace_outlasts_its_drain(overlay: Rendered) -> None:
    settings = load_settings(container_env(overlay, WORKER))
    drain_s = READ_BLOCK_MS / 1000 + settings.worker.shutdown_grace_s + HANDBACK_MARGIN_S
    grace_s = overlay.pod_spec(WORKER)["terminationGracePeriodSeconds"]
    assert grace_s >= drain_s, f"{grace_s}s would SIGKILL a drain of up to {drain_s}s"


def test_web_grace_covers_its_pre_stop_pause(overlay: Rendered) -> None:
    pod = overlay.pod_spec(WEB)
    pause_s = overlay.container(WEB)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pause_s + 10


def test_memory_requests_and_limits_cover_the_bench_figures(overlay: Rendered) -> None:
    measured = bench_memory_mib()
    mib = 1024 * 1024
    for name, row in ((WEB, "web, full GET"), (WORKER, "worker downloading")):
        peak, _growth = measured[row]
        resources = overlay.container(name)["resources"]
        request = quantity_bytes(resources["requests"]["memory"]) / mib
        limit = quantity_bytes(resources["limits"]["memory"]) / mib
        assert request >= peak * 1.5, f"{name}: request {request} MiB, measured peak {peak}"
        assert limit >= 2 * request
    worker_peak, worker_growth = measured["worker downloading"]
    worker_limit = quantity_bytes(overlay.container(WORKER)["resources"]["limits"]["memory"]) / mib
    assert worker_limit >= worker_peak + WORKER_CONCURRENT_DOWNLOADS * worker_growth


# --- environment -----------------------------------------------------------------------


def test_every_variable_is_one_callrec_or_keda_reads(overlay: Rendered) -> None:
    known = contract_variables() | readme_variables() | settings_variables()
    assert set(overlay.config()) <= known, set(overlay.config()) - known
    for name in (WEB, WORKER):
        env = {e["name"] for e in overlay.container(name)["env"]}
        allowed = known | (KEDA_ENV if name == WORKER else set())
        assert env <= allowed, f"{name}: {env - allowed}"
        assert not env & set(overlay.config()), f"{name}: set twice"


def test_secrets_come_from_the_secret_and_required_ones_are_not_optional(
    overlay: Rendered,
) -> None:
    config = overlay.config()
    for name, required in ((WEB, WEB_REQUIRED), (WORKER, WORKER_REQUIRED)):
        container = overlay.container(name)
        refs = secret_refs(container)
        assert all("value" not in e for e in container["env"]), "values belong in the ConfigMap"
        for ref_name, ref in refs.items():
            assert ref["name"] == SECRET and ref["key"] == ref_name
            assert set(ref) <= {"name", "key", "optional"}
        for var in required:
            assert var in refs and not refs[var].get("optional"), f"{name}: {var}"
        for secret in ("TWILIO_AUTH_TOKEN", "CALLREC_JWT_SECRET", "AWS_SECRET_ACCESS_KEY"):
            assert secret not in config, f"{secret} is a secret, not configuration"


def test_settings_load_as_each_pod_would(overlay: Rendered) -> None:
    web = load_settings(container_env(overlay, WEB), require=WEB_REQUIRED)
    worker = load_settings(container_env(overlay, WORKER), require=WORKER_REQUIRED)
    for name, settings in ((WEB, web), (WORKER, worker)):
        path, _volume = recordings_mount(overlay, name)
        assert str(settings.recordings_dir) == path, f"{name}: RECORDINGS_DIR is not mounted"
    assert web.storage == worker.storage


def test_every_contract_variable_is_set_or_left_unset_on_purpose(
    overlays: dict[str, Rendered],
) -> None:
    seen: set[str] = set()
    for rendered in overlays.values():
        seen |= set(rendered.config())
        for name in (WEB, WORKER):
            seen |= {e["name"] for e in rendered.container(name)["env"]}
    missing = contract_variables() - seen - set(LEFT_UNSET)
    assert missing == set()
    assert not set(LEFT_UNSET) & seen


# --- storage per overlay ---------------------------------------------------------------


def test_shared_volume_mounts_one_read_write_many_claim_everywhere(
    overlays: dict[str, Rendered],
) -> None:
    rendered = overlays["shared-volume"]
    assert rendered.config()["STORAGE"] == "disk"
    assert rendered.config()["RECORDINGS_DIR_SHARED"] == "true"  # for `callrec check`
    [claim] = rendered.all("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in (WEB, WORKER):
        path, volume = recordings_mount(rendered, name)
        assert path == rendered.config()["RECORDINGS_DIR"]
        assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"]}


def test_s3_has_no_shared_volume_and_a_cache_bounded_like_cache_max_bytes(
    overlays: dict[str, Rendered],
) -> None:
    rendered = overlays["s3"]
    config = rendered.config()
    assert config["STORAGE"] == "s3" and config["S3_BUCKET"]
    assert rendered.all("PersistentVolumeClaim") == []
    settings = load_settings(container_env(rendered, WORKER))
    assert settings.s3 is not None and settings.s3.cache_max_bytes is not None
    cache_bytes = settings.s3.cache_max_bytes
    for name in (WEB, WORKER):
        path, volume = recordings_mount(rendered, name)
        assert path == config["RECORDINGS_DIR"]
        assert set(volume) == {"name", "emptyDir"}
        limit = quantity_bytes(volume["emptyDir"]["sizeLimit"])
        # Above the cache's bound (files being written or served are never evicted, and
        # outgrowing sizeLimit evicts the pod), but of the same order.
        assert cache_bytes < limit <= 2 * cache_bytes, (name, limit, cache_bytes)


def test_selectors_find_their_pods(overlay: Rendered) -> None:
    for name in (WEB, WORKER):
        labels = overlay.one("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        selector = overlay.one("Deployment", name)["spec"]["selector"]["matchLabels"]
        budget = overlay.one("PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items() and budget == selector
    web_labels = overlay.one("Deployment", WEB)["spec"]["template"]["metadata"]["labels"]
    assert overlay.one("Service", WEB)["spec"]["selector"].items() <= web_labels.items()
    worker_labels = overlay.one("Deployment", WORKER)["spec"]["template"]["metadata"]["labels"]
    assert not overlay.one("Service", WEB)["spec"]["selector"].items() <= worker_labels.items()


def test_manifests_are_where_the_docs_say() -> None:
    readme = (ROOT / "deploy" / "README.md").read_text()
    section = _section(readme, "## Kubernetes")
    for overlay_name in OVERLAYS:
        assert f"deploy/kubernetes/overlays/{overlay_name}" in section
