"""The text report: a symbol per status, fixes only under warnings and failures, a counted summary,
and the exit code."""

from __future__ import annotations

from sidecar.doctor.report import Finding, exit_code, render_report


def test_report_shows_fixes_for_problems_only_and_counts_them() -> None:
    findings = [
        Finding("ok", "fine", "detail", "never shown"),
        Finding("warn", "shaky", "", "do this"),
        Finding("fail", "broken", "why", "do that"),
        Finding("skip", "not applicable"),
    ]
    assert render_report(findings, source="a.yaml").split("\n") == [
        "sidecar doctor: a.yaml",
        "",
        "✓ fine: detail",
        "! shaky",
        "    fix: do this",
        "✗ broken: why",
        "    fix: do that",
        "- not applicable",
        "",
        "1 problem, 1 warning",
    ]
    assert exit_code(findings) == 1


def test_warnings_alone_pass() -> None:
    findings = [Finding("warn", "a"), Finding("warn", "b")]
    assert render_report(findings, source="x").endswith("all checks passed, 2 warnings")
    assert exit_code(findings) == 0
