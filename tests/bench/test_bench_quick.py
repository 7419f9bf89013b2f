"""The benchmark keeps working: `bench/run.py --quick` runs end to end and writes its JSON report.

It checks that every measurement ran and produced figures, not how fast anything is (the quick
run is 1 s per figure on a shared machine). Missing tools skip the test locally and fail it under
CI (`CI` set), like the e2e tests: CI must never pass by not running the benchmark. Setup:
`bash bench/setup.sh` as root.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

pytestmark = pytest.mark.bench

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "bench" / "run.py"
TIMEOUT_SECONDS = 600
REQUIRED = {
    "wrk": "wrk",
    "curl": "curl",
    "nginx": "/usr/sbin/nginx",
    "nginx echo module": "/usr/lib/nginx/modules/ngx_http_echo_module.so",
    "node": "node",
    "oidc-provider (npm ci --prefix tests/e2e)": str(REPO / "tests/e2e/node_modules/oidc-provider"),
}
PEER = {
    "apache2": "/usr/sbin/apache2",
    "mod_auth_openidc": "/usr/lib/apache2/modules/mod_auth_openidc.so",
}


def missing_tool(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"benchmark prerequisite missing under CI: {reason}", pytrace=False)
    pytest.skip(f"benchmark prerequisite missing: {reason} (run bash bench/setup.sh as root)")


def _absent(tools: dict[str, str]) -> list[str]:
    return [
        name
        for name, where in tools.items()
        if not (os.path.exists(where) if where.startswith("/") else shutil.which(where))
    ]


def _figure(node: dict[str, Any], *keys: str) -> float:
    for key in keys:
        assert key in node, f"missing {key!r} in {sorted(node)}"
        node = node[key]
    assert isinstance(node, int | float), f"{keys} is {node!r}"
    return float(node)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    if missing := _absent(REQUIRED):
        missing_tool(", ".join(missing))
    if (missing_peer := _absent(PEER)) and os.environ.get("CI"):
        missing_tool(", ".join(missing_peer))
    output = tmp_path_factory.mktemp("bench") / "quick.json"
    try:
        done = subprocess.run(
            [sys.executable, str(RUN), "--quick", "--output", str(output)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"bench/run.py --quick did not finish in {TIMEOUT_SECONDS}s: {exc.stderr!r}")
    assert done.returncode == 0, (
        f"bench/run.py --quick failed:\n{done.stdout}\n{done.stderr[-6000:]}"
    )
    return json.loads(output.read_text()), done.stdout


def test_quick_run_reports_every_measurement(quick_report: tuple[dict[str, Any], str]) -> None:
    report, _ = quick_report
    results = report["results"]
    peer = report["meta"]["peer"]
    targets = ["backend", "sidecar"] + (["apache_plain", "apache_oidc"] if peer else [])
    for level in ("1", "32"):
        for target in targets:
            assert _figure(results, "connections", level, target, "rps") > 0
            assert _figure(results, "connections", level, target, "p99_ms") > 0
    for level in ("256", "1024"):  # 1 s with this many connections may be all connection setup
        for target in targets:
            assert _figure(results, "connections", level, target, "rps") >= 0
            assert "error_kinds" in results["connections"][level][target]
    for target in ["backend", "sidecar"] + (["apache_oidc"] if peer else []):
        assert _figure(results, "large_session", target, "rps") > 0
        for way in ("download", "upload"):
            assert _figure(results, "streaming", way, target, "mb_s") > 0
            assert _figure(results, "streaming", way, target, "peak_rss_mb") > 0
    for proxy in ["sidecar"] + (["apache_oidc"] if peer else []):
        assert _figure(results, "sign_in", proxy, "median_ms") > 0
        assert _figure(results, "sessions", proxy, "large_cookies") >= 1
    # Every serving process runs uvloop (installed with sidecar): the workers, not the supervisor.
    assert results["sidecar_instances"]["sidecar"]["uvloop"] is True
    assert _figure(results, "rss", "sidecar", "idle_mb") > 0
    assert _figure(results, "rss", "sidecar", "load_mb") > 0
    routes = results["routes"]
    assert "skipped" in routes or (
        _figure(routes, "10", "rps") > 0 and _figure(routes, "1000", "rps") > 0
    )


def test_quick_run_checks_every_target(quick_report: tuple[dict[str, Any], str]) -> None:
    report, _ = quick_report
    checks = {check["target"]: check for check in report["targets"]}
    assert len(checks) == 11
    measured = [name for name, check in checks.items() if not math.isnan(check["measured"])]
    if report["meta"]["peer"]:
        assert len(measured) >= 10  # all but routes when sidecar has none yet


def test_quick_run_prints_the_table(quick_report: tuple[dict[str, Any], str]) -> None:
    report, stdout = quick_report
    assert "| req/s @32 conns |" in stdout
    assert "| sign-in round trip ms |" in stdout
    assert report["meta"]["machine"]["nproc"] >= 1
    assert report["meta"]["machine"]["versions"]["sidecar"]
