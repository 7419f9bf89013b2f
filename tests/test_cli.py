"""The `sidecar` command line as a user runs it (sidecar.cli): output and exit codes."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml

from sidecar import __version__
from sidecar.cli import COMMANDS, main
from sidecar.config.load import parse_config_text

REPO = Path(__file__).resolve().parents[1]
VALID = "version: 1\nupstream: http://127.0.0.1:8080\n"
INVALID = """\
version: 1
server:
  lisen: 0.0.0.0:4180
upstreams:
  - path: /
    url: ftp://backend
"""


def sidecar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m sidecar ARGS` in a fresh process, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if k != "SIDECAR_CONFIG"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def valid_file(tmp_path: Path) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(VALID)
    return path


@pytest.fixture
def invalid_file(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(INVALID)
    return path


def test_check_config_accepts_a_valid_file(valid_file: Path) -> None:
    result = sidecar("check-config", "-c", str(valid_file))
    assert (result.returncode, result.stdout, result.stderr) == (0, "configuration is valid\n", "")


def test_check_config_lists_every_problem_and_exits_2(invalid_file: Path) -> None:
    result = sidecar("check-config", "-c", str(invalid_file))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{invalid_file}:3: server.lisen: unknown key (did you mean 'listen'?)",
        f"{invalid_file}:6: upstreams[0].url: not an http(s) URL",
        "configuration is invalid: 2 problems",
    ]


def test_check_config_reads_the_file_named_by_sidecar_config(invalid_file: Path) -> None:
    result = sidecar("check-config", env={"SIDECAR_CONFIG": str(invalid_file)})
    assert result.returncode == 2
    assert "upstreams[0].url: not an http(s) URL" in result.stderr


def test_check_config_without_a_file_is_a_usage_error() -> None:
    result = sidecar("check-config")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "sidecar check-config: error: no configuration file: give -c FILE or set SIDECAR_CONFIG"
    )


def test_check_config_of_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = sidecar("check-config", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'nope.yaml'}: no such file",
        "configuration is invalid: 1 problem",
    ]


def test_check_config_never_prints_the_secret(tmp_path: Path) -> None:
    sentinel = "SENTINEL-client-secret-0123456789"
    path = tmp_path / "c.yaml"
    path.write_text(
        VALID
        + "provider:\n  issuer: http://10.0.0.1\n  client_id: a\n"
        + f"  client_secret: {sentinel}\n  client_secret: {sentinel}\n  cliet_id: {sentinel}\n"
    )
    result = sidecar("check-config", "-c", str(path))
    assert result.returncode == 2
    assert sentinel not in result.stdout + result.stderr
    assert "duplicate key" in result.stderr


def test_run_with_an_invalid_config_exits_2_without_a_traceback(invalid_file: Path) -> None:
    result = sidecar("run", "-c", str(invalid_file))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "upstreams[0].url: not an http(s) URL" in result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_run_serves_until_sigterm_then_exits_0(tmp_path: Path) -> None:
    port = _free_port()
    path = tmp_path / "run.yaml"
    path.write_text(VALID + f"server:\n  listen: 127.0.0.1:{port}\n")
    env = {k: v for k, v in os.environ.items() if k != "SIDECAR_CONFIG"}
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "run", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        output = _read_until(process, "listening on", deadline=time.monotonic() + 30)
        assert f"127.0.0.1:{port}" in output
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/oauth2/healthz", timeout=10) as reply:
            assert reply.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_run_on_a_taken_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "run.yaml"
        path.write_text(VALID + f"server:\n  listen: 127.0.0.1:{port}\n")
        result = sidecar("run", "-c", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("sidecar: ")
    assert "address already in use" in result.stderr.splitlines()[-1]


def _read_until(process: subprocess.Popen[str], marker: str, *, deadline: float) -> str:
    """Collect the process's output until a line holds `marker` (no fixed sleeps)."""
    assert process.stdout is not None
    output = ""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while marker not in output:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(timeout=remaining):
                pytest.fail(f"sidecar did not start; output so far:\n{output}")
            line = process.stdout.readline()
            if not line:
                pytest.fail(f"sidecar exited with {process.wait()}; output:\n{output}")
            output += line
    return output


def test_config_schema_is_json_that_validates_the_example() -> None:
    result = sidecar("config-schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    example = yaml.safe_load((REPO / "config.example.yaml").read_text())
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(example)) == []


def test_secret_prints_a_fresh_key_the_config_accepts() -> None:
    first, second = sidecar("secret"), sidecar("secret")
    assert first.returncode == second.returncode == 0
    key = first.stdout.strip()
    assert first.stdout == key + "\n"
    assert key != second.stdout.strip()
    config = parse_config_text(
        VALID + "provider: {issuer: https://a.example, client_id: x, client_secret: y}\n"
        "session:\n  secret: ${KEY}\n",
        source="c.yaml",
        env={"KEY": key},
        base_dir=".",
    )
    assert config.session is not None
    assert config.session.secrets[0].get_secret_value() == key


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"sidecar {__version__}\n"


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["check-config", "--bogus"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage: sidecar" in capsys.readouterr().err


def test_main_returns_exit_codes_in_process(
    valid_file: Path, invalid_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "-c", str(valid_file)]) == 0
    assert main(["check-config", "-c", str(invalid_file)]) == 2
    out = capsys.readouterr()
    assert out.out == "configuration is valid\n"
    assert out.err.endswith("configuration is invalid: 2 problems\n")


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert name in text
        assert command.help in text
