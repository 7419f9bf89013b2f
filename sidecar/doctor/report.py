"""A doctor `Finding` (ok, warn, fail, skip) and the text report: a ✓/!/✗ line per finding, its
fix indented below, a summary last; the exit code is 1 when anything failed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail", "skip"]
SYMBOLS: dict[Status, str] = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-"}


@dataclass(frozen=True)
class Finding:
    """One line of the report."""

    status: Status
    title: str
    detail: str = ""
    fix: str = ""


def render_report(findings: Sequence[Finding], *, source: str) -> str:
    """The report as text: a line per finding, its fix indented below, a summary at the end."""
    lines = [f"sidecar doctor: {source}", ""]
    for finding in findings:
        line = f"{SYMBOLS[finding.status]} {finding.title}"
        if finding.detail:
            line += f": {finding.detail}"
        lines.append(line)
        if finding.fix and finding.status in ("warn", "fail"):
            lines.append(f"    fix: {finding.fix}")
    failed = sum(f.status == "fail" for f in findings)
    warned = sum(f.status == "warn" for f in findings)
    lines.append("")
    if failed:
        lines.append(
            f"{failed} problem{'s' * (failed != 1)}, {warned} warning{'s' * (warned != 1)}"
        )
    else:
        lines.append(f"all checks passed, {warned} warning{'s' * (warned != 1)}")
    return "\n".join(lines)


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.status == "fail" for f in findings) else 0
