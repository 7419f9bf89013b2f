"""The benchmark's verdicts and table: issue 7's targets checked against one run's medians.

`check_targets(results)` returns one row per target (name, wanted, measured, met) from the
results dictionary that run.py builds; `render_table(results, checks)` is the text printed at the
end of a run and pasted into docs/benchmarks.md: each figure beside the peer's (Apache +
mod_auth_openidc) and the backend's (nginx direct), with the ratios.
"""

from __future__ import annotations

import math
from typing import Any

TARGET_NAMES = ("backend", "apache_plain", "apache_oidc", "sidecar")
HEADINGS = ("nginx direct", "Apache proxy", "Apache+OIDC", "sidecar")


def _get(results: dict[str, Any], *path: str) -> float:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return math.nan
        node = node[key]
    return float(node) if isinstance(node, int | float) else math.nan


def _fmt(value: float, digits: int = 0) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 7's targets, each with the measured value and whether it is met (None: unmeasured)."""
    conn = results.get("connections", {})
    c32 = conn.get("32", {})
    c1 = conn.get("1", {})
    rows: list[dict[str, Any]] = []

    def row(name: str, wanted: str, measured: float, met: bool | None, unit: str = "") -> None:
        if math.isnan(measured):
            met = None
        rows.append(
            {"target": name, "wanted": wanted, "measured": measured, "unit": unit, "met": met}
        )

    peer_rps = _get(c32, "apache_oidc", "rps")
    side_rps = _get(c32, "sidecar", "rps")
    ratio = side_rps / peer_rps if peer_rps else math.nan
    row("throughput @32 vs peer", ">= 1.0x (stretch 1.5x)", ratio, ratio >= 1.0, "x")
    peer_p99 = _get(c32, "apache_oidc", "p99_ms")
    side_p99 = _get(c32, "sidecar", "p99_ms")
    row(
        "p99 @32 vs peer",
        "<= 1.0x",
        side_p99 / peer_p99 if peer_p99 else math.nan,
        side_p99 <= peer_p99,
        "x",
    )
    added = _get(c1, "sidecar", "p50_ms") - _get(c1, "backend", "p50_ms")
    row("added latency @1 (p50)", "<= 0.30 ms", added, added <= 0.3, "ms")
    small = _get(results, "large_session", "sidecar_small", "rps")
    for label, key in (("", "sidecar_unpadded"), (", padded to the peer's", "sidecar")):
        big = _get(results, "large_session", key, "rps")
        slower = 1 - big / small if small else math.nan
        row(f"large session slowdown{label}", "<= 20%", slower * 100, slower <= 0.2, "%")
    r10 = _get(results, "routes", "10", "rps")
    r1000 = _get(results, "routes", "1000", "rps")
    slower = 1 - r1000 / r10 if r10 else math.nan
    row("1,000 vs 10 routes slowdown", "<= 10%", slower * 100, slower <= 0.1, "%")
    for way in ("download", "upload"):
        direct = _get(results, "streaming", way, "backend", "mb_s")
        side = _get(results, "streaming", way, "sidecar", "mb_s")
        share = side / direct if direct else math.nan
        row(f"{way} vs direct", ">= 0.5x", share, share >= 0.5, "x")
        peak = _get(results, "streaming", way, "sidecar", "peak_rss_mb")
        row(f"{way} peak RSS", "< 100 MB", peak, peak < 100, "MB")
    side_in = _get(results, "sign_in", "sidecar", "median_ms")
    peer_in = _get(results, "sign_in", "apache_oidc", "median_ms")
    row(
        "sign-in round trip vs peer",
        "<= 1.0x",
        side_in / peer_in if peer_in else math.nan,
        side_in <= peer_in,
        "x",
    )
    return rows


def render_table(results: dict[str, Any], checks: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table (medians), then the targets."""
    lines = [
        "| measurement | " + " | ".join(HEADINGS) + " | sidecar / peer | sidecar / direct |",
        "|---|" + "---:|" * (len(HEADINGS) + 2),
    ]

    def add(label: str, values: dict[str, float], digits: int = 0, *, ratios: bool = True) -> None:
        cells = [_fmt(values.get(name, math.nan), digits) for name in TARGET_NAMES]
        side = values.get("sidecar", math.nan)
        peer = _ratio(side, values.get("apache_oidc", math.nan)) if ratios else "-"
        direct = _ratio(side, values.get("backend", math.nan)) if ratios else "-"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {peer} | {direct} |")

    for level, entry in sorted(results.get("connections", {}).items(), key=lambda kv: int(kv[0])):
        add(f"req/s @{level} conns", {n: _get(entry, n, "rps") for n in TARGET_NAMES})
        add(f"p50 ms @{level}", {n: _get(entry, n, "p50_ms") for n in TARGET_NAMES}, 2)
        add(f"p99 ms @{level}", {n: _get(entry, n, "p99_ms") for n in TARGET_NAMES}, 2)
        add(
            f"CPU us/request @{level}",
            {n: _get(entry, n, "cpu_us_per_request") for n in TARGET_NAMES},
        )
    one = results.get("connections", {}).get("1", {})
    base = _get(one, "backend", "p50_ms")
    add(
        "added p50 ms @1 over direct",
        {n: _get(one, n, "p50_ms") - base for n in TARGET_NAMES if n != "backend"},
        3,
        ratios=False,
    )
    large = results.get("large_session", {})
    if large:
        add("large session req/s @32", {n: _get(large, n, "rps") for n in TARGET_NAMES})
        add("large session p99 ms @32", {n: _get(large, n, "p99_ms") for n in TARGET_NAMES}, 2)
        add(
            "large session CPU us/request @32",
            {n: _get(large, n, "cpu_us_per_request") for n in TARGET_NAMES},
        )
        add(
            "large session, own cookies only, req/s @32",
            {n: _get(large, f"{n}_unpadded", "rps") for n in TARGET_NAMES},
        )
        add(
            "small session req/s @32 (same rounds)",
            {n: _get(large, f"{n}_small", "rps") for n in TARGET_NAMES},
        )
    one_worker = results.get("sidecar_one_worker", {})
    for level, entry in sorted(one_worker.items(), key=lambda kv: int(kv[0])):
        add(f"sidecar, 1 worker: req/s @{level}", {"sidecar": _get(entry, "rps")}, ratios=False)
    routes = results.get("routes", {})
    for count in ("none", "10", "1000"):
        if count in routes:
            label = "no routes" if count == "none" else f"{count} routes"
            add(f"{label} req/s @32", {"sidecar": _get(routes, count, "rps")}, ratios=False)
    for way in ("download", "upload"):
        entry = results.get("streaming", {}).get(way, {})
        if entry:
            add(f"{way} MB/s", {n: _get(entry, n, "mb_s") for n in TARGET_NAMES})
            add(
                f"{way} peak RSS MB",
                {n: _get(entry, n, "peak_rss_mb") for n in TARGET_NAMES},
                1,
                ratios=False,
            )
    sign_in = results.get("sign_in", {})
    if sign_in:
        add("sign-in round trip ms", {n: _get(sign_in, n, "median_ms") for n in TARGET_NAMES}, 1)
    rss = results.get("rss", {})
    if rss:
        add("RSS idle MB", {n: _get(rss, n, "idle_mb") for n in TARGET_NAMES}, 1, ratios=False)
        add(
            "RSS under load MB", {n: _get(rss, n, "load_mb") for n in TARGET_NAMES}, 1, ratios=False
        )

    lines += ["", "| target | wanted | measured | met |", "|---|---|---:|---|"]
    for check in checks:
        met = {True: "yes", False: "**no**", None: "not measured"}[check["met"]]
        value = check["measured"]
        shown = "-" if math.isnan(value) else f"{value:.2f} {check['unit']}".strip()
        lines.append(f"| {check['target']} | {check['wanted']} | {shown} | {met} |")
    return "\n".join(lines)
