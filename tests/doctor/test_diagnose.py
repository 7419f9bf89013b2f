"""`sidecar doctor` end to end: a good setup passes, an invalid config stops at its problems, and
the command prints the report and exits 1 on a problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sidecar.cli import main
from sidecar.doctor import diagnose
from sidecar.doctor.report import exit_code, render_report

from .conftest import CLIENT_SECRET, KEY, PUBLIC_URL, Write, by_title, closed_port


async def test_a_good_setup_passes_and_names_the_redirect_uri(write: Write) -> None:
    findings = await diagnose(write())
    assert [f for f in findings if f.status in ("fail", "warn")] == []
    assert exit_code(findings) == 0
    titles = [f.title for f in findings]
    for expected in (
        "configuration is valid",
        "provider reachable",
        "clock skew",
        "issuer matches",
        "discovery valid",
        "JWKS usable",
        "client credentials accepted",
        "redirect URI to register at the provider",
        "session.secrets[0] strength",
        "session cookie size",
    ):
        assert expected in titles
    assert by_title(findings, "redirect URI").detail == PUBLIC_URL + "/oauth2/callback"
    report = render_report(findings, source="sidecar.yaml")
    assert (
        "✓ redirect URI to register at the provider: https://app.example.com/oauth2/callback"
        in (report)
    )
    assert report.endswith("all checks passed, 0 warnings")
    assert CLIENT_SECRET not in report and KEY not in report


async def test_invalid_config_is_named_with_its_problems(write: Write) -> None:
    findings = await diagnose(write(upstream="ftp://nowhere"))
    assert [f.status for f in findings] == ["fail"]
    assert "upstream" in findings[0].detail and "check-config" in findings[0].fix


def test_cli_prints_the_report_and_exits_1_on_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(
        yaml.safe_dump({"version": 1, "upstream": f"http://127.0.0.1:{closed_port()}"}),
        encoding="utf-8",
    )
    assert main(["doctor", "-c", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"sidecar doctor: {path}")
    assert "✓ configuration is valid" in out
    assert "- identity provider: none configured" in out
    assert "✗ upstream / -> http://127.0.0.1:" in out and "    fix: start the backend" in out
    assert out.rstrip().endswith("1 problem, 0 warnings")
