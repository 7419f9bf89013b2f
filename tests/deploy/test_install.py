"""The image's install steps, run here: deploy/docker/install.sh on the same files the builder
stage copies, into a fresh venv. What a user of the image gets must work from that venv alone:
`sidecar --version`, `check-config` on the Kubernetes example, the Dockerfile's HEALTHCHECK and the
Deployment's probes against a running `sidecar run`, and no file written under the venv at run time.

Slow-ish (it installs the dependencies from the package registry or pip's cache, ~30 s), so the venv
is built once per module.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.dockerfile import build_builder_context, healthcheck_command, read_stages
from sidecar.endpoints import Endpoints

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
STARTUP_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/opt/sidecar as the builder stage makes it, under a temporary directory."""
    root = tmp_path_factory.mktemp("image")
    context = build_builder_context(root / "src")
    venv = root / "opt" / "sidecar"
    builder = read_stages()[0]
    run = builder.one("RUN").split()
    assert run[2:] == ["/src", "/opt/sidecar"]
    result = subprocess.run(
        ["sh", run[1], str(context), str(venv)],
        cwd=context,
        # pip's cache is welcome here (the image disables it); any value of PIP_NO_CACHE_DIR,
        # even "0", would turn it off.
        env={**without(os.environ, "PIP_NO_CACHE_DIR"), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return venv


def without(env: Mapping[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in env.items() if key != name}


def image_env(venv: Path, **extra: str) -> dict[str, str]:
    """The final stage's ENV (PATH with the venv first), on top of a minimal environment."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    for key, value in read_stages()[1].env().items():
        env[key] = value.replace("$PATH", env["PATH"]).replace("/opt/sidecar", str(venv))
    env.update(extra)
    return env


def sidecar(venv: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "sidecar"), *args],
        env=image_env(venv, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def venv_files(venv: Path) -> set[str]:
    return {p.relative_to(venv).as_posix() for p in venv.rglob("*")}


def configmap_config() -> str:
    configmap = yaml.safe_load((KUBERNETES / "configmap.yaml").read_text(encoding="utf-8"))
    text: str = configmap["data"]["config.yaml"]
    return text


def secret_files() -> dict[str, str]:
    secret = yaml.safe_load((KUBERNETES / "secret.yaml").read_text(encoding="utf-8"))
    data: dict[str, str] = secret["stringData"]
    return data


def test_the_installed_command_reports_its_version(image_venv: Path) -> None:
    result = sidecar(image_venv, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("sidecar ")


def test_the_venv_carries_no_installer(image_venv: Path) -> None:
    assert not (image_venv / "bin" / "pip").exists()


def test_kubernetes_config_checks_out_with_real_secrets(image_venv: Path, tmp_path: Path) -> None:
    # The pod's /etc/sidecar: config.yaml from the ConfigMap, secrets/ from the Secret.
    (tmp_path / "config.yaml").write_text(configmap_config(), encoding="utf-8")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "client-secret").write_text("s3cr3t-from-the-provider\n")
    new, old = (sidecar(image_venv, "secret").stdout.strip() for _ in range(2))
    (tmp_path / "secrets" / "cookie-secrets").write_text(f"{new}\n{old}\n")
    result = sidecar(image_venv, "check-config", "-c", str(tmp_path / "config.yaml"))
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout


def test_example_secret_placeholders_are_refused(image_venv: Path, tmp_path: Path) -> None:
    # secret.yaml applied unchanged must not give a running sidecar with a published cookie key.
    (tmp_path / "config.yaml").write_text(configmap_config(), encoding="utf-8")
    (tmp_path / "secrets").mkdir()
    for name, value in secret_files().items():
        (tmp_path / "secrets" / name).write_text(value)
    result = sidecar(image_venv, "check-config", "-c", str(tmp_path / "config.yaml"))
    assert result.returncode != 0
    assert "session.secrets" in result.stderr
    assert "sidecar secret" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def running_sidecar(image_venv: Path, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """`sidecar run` from the image venv: a plain proxy (no provider, so no network needed)."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"version: 1\nserver:\n  listen: 127.0.0.1:{port}\nupstream: http://127.0.0.1:9\n",
        encoding="utf-8",
    )
    before = venv_files(image_venv)
    process = subprocess.Popen(
        [str(image_venv / "bin" / "sidecar"), "run", "-c", str(config)],
        env=image_env(image_venv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_serving(process, port)
        yield image_venv, port
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    # A read-only root filesystem is fine: running wrote nothing (no bytecode, no state).
    assert venv_files(image_venv) == before


def wait_until_serving(process: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"sidecar exited early: {process.communicate()[1]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # polling a child process's start-up, not timing a behaviour
    raise AssertionError(f"sidecar did not listen on {port} within {STARTUP_TIMEOUT} s")


def run_healthcheck(venv: Path, url: str) -> int:
    _, command = healthcheck_command(read_stages()[1])
    result = subprocess.run(
        command,
        env=image_env(venv, SIDECAR_HEALTHCHECK_URL=url),
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode


def test_dockerfile_healthcheck_passes_while_sidecar_serves(
    running_sidecar: tuple[Path, int],
) -> None:
    venv, port = running_sidecar
    assert run_healthcheck(venv, f"http://127.0.0.1:{port}{Endpoints('/oauth2').healthz}") == 0


def test_dockerfile_healthcheck_fails_when_nothing_serves(image_venv: Path) -> None:
    assert run_healthcheck(image_venv, f"http://127.0.0.1:{free_port()}/oauth2/healthz") != 0


def probes() -> list[tuple[str, str]]:
    deployment = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text(encoding="utf-8"))
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = (c for c in containers if c["name"] == "sidecar")
    return [
        (kind, container[kind]["httpGet"]["path"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        if kind in container
    ]


def test_deployment_probes_answer_200_from_a_running_sidecar(
    running_sidecar: tuple[Path, int],
) -> None:
    _, port = running_sidecar
    found = probes()
    assert {kind for kind, _ in found} >= {"livenessProbe", "readinessProbe"}
    for kind, path in found:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == 200, f"{kind} {path} answered {status}"


def test_install_refuses_an_unpinned_build(tmp_path: Path) -> None:
    # Without constraints.txt the image would get whatever versions the registry serves today.
    (tmp_path / "src").mkdir()
    script = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "install.sh"
    result = subprocess.run(
        ["sh", str(script), str(tmp_path / "src"), str(tmp_path / "venv")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "constraints.txt is missing" in result.stderr
    assert not (tmp_path / "venv").exists()
