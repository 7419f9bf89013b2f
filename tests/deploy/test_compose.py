"""deploy/docker-compose.yml: parses, points at files that exist, and hands sidecar a config that
sidecar's own loader accepts with exactly the environment and secret files Compose provides.

No Docker engine here, so Compose's own `config` check cannot run; these tests read the file the
way Compose would for the parts we rely on (interpolation of ${VAR:?...} and ${VAR:-default}).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from sidecar.config.load import parse_config_text
from sidecar.config.model import SidecarConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
CONFIG_PATH = PurePosixPath("/etc/sidecar/config.yaml")
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[?-])(?P<arg>[^}]*))?\}")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def interpolate(value: str, shell: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} against the user's shell variables."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if shell.get(name):
            return shell[name]
        if op == "-":
            return arg
        raise AssertionError(f"${{{name}}} is unset: {arg}" if op == "?" else f"${name} unset")

    return _VARIABLE.sub(replace, value)


def bind_mounts(svc: dict[str, Any]) -> dict[PurePosixPath, Path]:
    mounts = {}
    for volume in svc.get("volumes", []):
        host, target, *_ = volume.split(":")
        assert host.startswith("."), f"{volume}: a bind mount relative to deploy/"
        mounts[PurePosixPath(target)] = (DEPLOY / host).resolve()
    return mounts


def secret_targets(svc: dict[str, Any]) -> dict[PurePosixPath, str]:
    return {PurePosixPath(s["target"]): s["source"] for s in svc["secrets"]}


def container_config(tmp_path: Path, shell: dict[str, str]) -> SidecarConfig:
    """What `sidecar run -c /etc/sidecar/config.yaml` loads inside the sidecar container: the
    mounted file, the service's environment, the secret files (under tmp_path for /etc/sidecar)."""
    svc = service("sidecar")
    config_file = bind_mounts(svc)[CONFIG_PATH]
    environment = {k: interpolate(str(v), shell) for k, v in svc["environment"].items()}
    for target, source in secret_targets(svc).items():
        variable = compose()["secrets"][source]["environment"]
        local = tmp_path / target.relative_to(CONFIG_PATH.parent)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(shell[variable], encoding="utf-8")
    return parse_config_text(
        config_file.read_text(encoding="utf-8"),
        source=str(config_file),
        env=environment,
        base_dir=tmp_path,
    )


SHELL = {
    "OIDC_ISSUER": "https://login.example.com/realms/main",
    "OIDC_CLIENT_ID": "legacy-app",
    "OIDC_CLIENT_SECRET": "from-the-provider",
    "SIDECAR_COOKIE_SECRETS": "x" * 43 + "\n",
}


def test_every_referenced_file_exists() -> None:
    svc = service("sidecar")
    for target, host in bind_mounts(svc).items():
        assert host.is_file(), f"{target} is mounted from {host}, which does not exist"
    context = (DEPLOY / svc["build"]["context"]).resolve()
    assert (context / svc["build"]["dockerfile"]).is_file()


def test_sidecar_runs_the_mounted_config() -> None:
    assert service("sidecar")["command"] == ["run", "-c", str(CONFIG_PATH)]


def test_only_sidecar_is_published() -> None:
    assert "ports" not in service("app"), "the app must be reached through sidecar only"
    assert service("sidecar")["ports"] == ["4180:4180"]


def test_both_containers_run_read_only_without_capabilities() -> None:
    for name in ("app", "sidecar"):
        svc = service(name)
        assert svc["read_only"] is True, name
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name


def test_secrets_come_from_the_users_environment_never_from_files_in_the_repo() -> None:
    for name, secret in compose()["secrets"].items():
        assert set(secret) == {"environment"}, name
    assert not any("SECRET" in key for key in service("sidecar")["environment"])


def test_config_is_valid_with_what_compose_provides(tmp_path: Path) -> None:
    config = container_config(tmp_path, SHELL)
    assert config.provider is not None
    assert config.provider.issuer == SHELL["OIDC_ISSUER"]
    assert config.provider.client_id == SHELL["OIDC_CLIENT_ID"]
    assert config.provider.client_secret is not None
    assert config.provider.client_secret.get_secret_value() == SHELL["OIDC_CLIENT_SECRET"]
    assert config.server.public_url == "http://localhost:4180"
    assert config.server.port == 4180  # the published container port


def test_upstream_is_the_app_service(tmp_path: Path) -> None:
    config = container_config(tmp_path, SHELL)
    (upstream,) = config.upstreams
    assert upstream.url == "http://app:8080"
    assert service("app")["command"] == ["--port", "8080"]


def test_every_variable_a_user_must_set_is_in_the_usage_comment() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    exported = set(re.findall(r"^#\s+export (.*)$", text, flags=re.MULTILINE))
    exported_names = {
        word.split("=")[0] for line in exported for word in line.split() if "=" in word
    }
    required = {m["name"] for m in _VARIABLE.finditer(text) if m["op"] == "?"}
    required |= {secret["environment"] for secret in compose()["secrets"].values()}
    assert required, "compose takes the issuer, client and secrets from the user's shell"
    assert required <= exported_names, required - exported_names
    for match in _VARIABLE.finditer(text):
        if match["op"] == "?":
            assert match["arg"].strip(), f"${{{match['name']}:?}} needs a hint for the user"
