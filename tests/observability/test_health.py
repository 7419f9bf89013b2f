"""Readiness reports from registered checks."""

from __future__ import annotations

from sidecar.observability.health import CheckResult, build_readiness_report, run_checks


def test_no_checks_means_ready() -> None:
    assert build_readiness_report([]) == (200, {"status": "ok", "checks": {}})


def test_one_failing_check_makes_503_and_is_named() -> None:
    status, body = build_readiness_report(
        [CheckResult("provider", False, "discovery: connection refused"), CheckResult("x", True)]
    )
    assert status == 503
    assert body["failing"] == ["provider"]
    assert body["checks"]["provider"]["detail"] == "discovery: connection refused"


def test_a_check_that_raises_counts_as_failing() -> None:
    def provider() -> CheckResult:
        raise RuntimeError("boom with secret=abc")

    (result,) = run_checks([provider])
    assert result == CheckResult("provider", False, "check raised RuntimeError")
