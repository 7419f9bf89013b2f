"""deploy/kubernetes/: valid for a recent Kubernetes (strict schema), and safe as shipped.

Every manifest passes kubernetes-validate with unknown fields rejected; the sidecar container runs
non-root on a read-only root with no capabilities; the probes, ports and mounts agree with the
sidecar config inside the ConfigMap, which itself passes sidecar's own validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import ValidationError

from sidecar.config.load import parse_config_text
from sidecar.config.model import SidecarConfig
from sidecar.endpoints import Endpoints

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
# The oldest Kubernetes release still commonly run, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
CONFIG_DIR = Path("/etc/sidecar")


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((KUBERNETES / name).read_text(encoding="utf-8"))
    return document


def manifests() -> list[str]:
    return load("kustomization.yaml")["resources"]  # type: ignore[no-any-return]


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = load("deployment.yaml")["spec"]["template"]["spec"]
    return spec


def container(name: str) -> dict[str, Any]:
    (found,) = (c for c in pod_spec()["containers"] if c["name"] == name)
    return found  # type: ignore[no-any-return]


def port_number(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = (p["containerPort"] for p in c["ports"] if p["name"] == port)
    return number  # type: ignore[no-any-return]


def sidecar_config(tmp_path: Path) -> SidecarConfig:
    """The ConfigMap's config through sidecar's loader, with the Secret's keys laid out as the
    pod mounts them (values replaced by valid ones: the placeholders are refused on purpose)."""
    text = load("configmap.yaml")["data"]["config.yaml"]
    mount = secret_mount_dir()
    secrets_dir = tmp_path / mount.relative_to(CONFIG_DIR)
    secrets_dir.mkdir(parents=True)
    for key in load("secret.yaml")["stringData"]:
        (secrets_dir / key).write_text("k" * 43 + "\n", encoding="utf-8")
    return parse_config_text(text, source="configmap.yaml", env={}, base_dir=tmp_path)


def secret_mount_dir() -> Path:
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    for mount in container("sidecar")["volumeMounts"]:
        if "secret" in volumes[mount["name"]]:
            return Path(mount["mountPath"])
    raise AssertionError("no Secret mounted into the sidecar container")


# --- schema --------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_in_the_directory() -> None:
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(manifests()) == on_disk


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", manifests())
def test_manifest_is_valid_kubernetes(name: str, version: str) -> None:
    documents = [d for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d]
    assert documents, f"{name} is empty"
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    # Proves the check above would catch a typo such as readOnlyRootFileSystem.
    deployment = load("deployment.yaml")
    sidecar = next(
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "sidecar"
    )
    sidecar["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


# --- security ------------------------------------------------------------------------------------


def test_sidecar_runs_non_root_read_only_without_capabilities() -> None:
    context = container("sidecar")["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 10001  # the image's USER
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"


def test_every_container_is_locked_down_and_limited() -> None:
    assert pod_spec()["securityContext"]["runAsNonRoot"] is True
    assert pod_spec()["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod_spec()["automountServiceAccountToken"] is False
    for c in pod_spec()["containers"]:
        context = c["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, c["name"]
        assert context["allowPrivilegeEscalation"] is False, c["name"]
        assert context["capabilities"]["drop"] == ["ALL"], c["name"]
        assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), c["name"]
        assert "memory" in c["resources"]["limits"], c["name"]


def test_service_sends_traffic_to_sidecar_never_to_the_app() -> None:
    (port,) = load("service.yaml")["spec"]["ports"]
    sidecar_port = port_number(container("sidecar"), port["targetPort"])
    assert sidecar_port == 4180
    app_ports = {p["containerPort"] for p in container("app")["ports"]}
    assert sidecar_port not in app_ports
    assert (
        load("service.yaml")["spec"]["selector"]
        == load("deployment.yaml")["spec"]["selector"]["matchLabels"]
    )


def test_network_policy_admits_only_sidecar_ports(tmp_path: Path) -> None:
    config = sidecar_config(tmp_path)
    policy = load("networkpolicy.yaml")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"] == load("deployment.yaml")["spec"]["selector"]
    allowed = {port["port"] for rule in policy["ingress"] for port in rule["ports"]}
    assert config.server.internal_listen is not None
    internal_port = int(config.server.internal_listen.rpartition(":")[2])
    assert allowed == {config.server.port, internal_port}


# --- agreement with sidecar's config and endpoints -----------------------------------------------


def test_configmap_config_passes_sidecars_validation(tmp_path: Path) -> None:
    config = sidecar_config(tmp_path)
    assert [u.url for u in config.upstreams] == ["http://127.0.0.1:8080"]
    assert config.server.public_url == "https://app.example.com"
    assert config.server.trusted_proxies, "the ingress controller's range must be trusted"
    assert config.provider is not None


def test_upstream_is_the_app_container_port(tmp_path: Path) -> None:
    config = sidecar_config(tmp_path)
    (upstream,) = config.upstreams
    assert upstream.url.endswith(f":{container('app')['ports'][0]['containerPort']}")


def test_probes_use_sidecars_health_endpoints_on_its_listen_port(tmp_path: Path) -> None:
    config = sidecar_config(tmp_path)
    endpoints = Endpoints(config.auth.prefix)
    sidecar = container("sidecar")
    expected = {
        "livenessProbe": endpoints.healthz,
        "readinessProbe": endpoints.readyz,
        "startupProbe": endpoints.healthz,
    }
    for kind, path in expected.items():
        probe = sidecar[kind]["httpGet"]
        assert probe["path"] == path, kind
        assert port_number(sidecar, probe["port"]) == config.server.port, kind


def test_sidecar_runs_the_mounted_config() -> None:
    sidecar = container("sidecar")
    assert sidecar["args"] == ["run", "-c", str(CONFIG_DIR / "config.yaml")]
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in sidecar["volumeMounts"]}
    config_volume = mounts[str(CONFIG_DIR)]["configMap"]
    assert config_volume["name"] == load("configmap.yaml")["metadata"]["name"]
    # No subPath: a subPath mount never sees ConfigMap updates, which live reload relies on.
    assert all("subPath" not in m for m in sidecar["volumeMounts"])
    assert "emptyDir" in mounts["/tmp"], "scratch space with a read-only root"


def test_every_secret_file_the_config_reads_is_a_key_of_the_mounted_secret() -> None:
    text = load("configmap.yaml")["data"]["config.yaml"]
    mount = secret_mount_dir()
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    secret_volume = next(v for v in volumes.values() if "secret" in v)["secret"]
    secret = load("secret.yaml")
    assert secret_volume["secretName"] == secret["metadata"]["name"]
    # The files only uid 10001 (via fsGroup) can read.
    assert secret_volume["defaultMode"] == 0o440
    assert pod_spec()["securityContext"]["fsGroup"] == 10001
    referenced = [
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.strip().split(":", 1)[0].endswith("_file")
    ]
    assert referenced, "the config reads its secrets from files"
    for relative in referenced:
        path = CONFIG_DIR / relative
        assert path.parent == mount, f"{relative} is not in the mounted Secret"
        assert path.name in secret["stringData"], f"{relative}: no such key in secret.yaml"


def test_example_secret_is_plainly_a_placeholder() -> None:
    secret = load("secret.yaml")
    for key, value in secret["stringData"].items():
        assert "REPLACE-ME" in value, key
