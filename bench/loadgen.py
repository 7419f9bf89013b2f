"""Load generation for the benchmark: wrk for request rates and latency, curl for big transfers.

`run_wrk(url, connections=..., seconds=..., cookie=...)` runs `wrk -t1 -cN -dS --latency` against
one URL on 127.0.0.1 and parses its report into a `WrkResult` (requests/s, p50/p90/p99 in ms,
error counts), sampling the resident memory of the given processes while it runs.
`download` / `upload` move one big body with curl and return MB/s (10^6 bytes per second).
Every run is bounded: wrk by its duration (plus a kill deadline), curl by `--max-time`.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from stack import cpu_seconds, rss_kib

WRK = "wrk"
CURL = "curl"
RSS_SAMPLE_SECONDS = 0.25
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


class LoadError(Exception):
    """wrk or curl failed, or its report could not be read."""


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    error_kinds: dict[str, int]
    non_2xx_3xx: int
    peak_rss_kib: int
    cpu_us_per_request: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def have_tools() -> list[str]:
    """Names of the load tools that are missing."""
    return [tool for tool in (WRK, CURL) if shutil.which(tool) is None]


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(text: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    if rps is None or total is None:
        raise LoadError(f"unreadable wrk report:\n{text}")
    percentiles: dict[str, float] = {}
    for pct, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        percentiles[pct] = _ms(value, unit)
    kinds = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if socket_errors:
        kinds = dict(zip(kinds, (int(n) for n in socket_errors.groups()), strict=True))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(
        rps=float(rps[1]),
        p50_ms=percentiles.get("50", float("nan")),
        p90_ms=percentiles.get("90", float("nan")),
        p99_ms=percentiles.get("99", float("nan")),
        requests=int(total[1]),
        errors=sum(kinds.values()),
        error_kinds=kinds,
        non_2xx_3xx=int(non_2xx[1]) if non_2xx else 0,
        peak_rss_kib=0,
        cpu_us_per_request=math.nan,
    )


async def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: int,
    cookie: str | None,
    rss_pids: Sequence[int] = (),
    cpu_root: int | None = None,
) -> WrkResult:
    """wrk against `url`; samples the RSS of `rss_pids` and, with `cpu_root`, charges the CPU
    time of that process tree to the requests served (microseconds per request)."""
    argv = [WRK, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if cookie:
        argv += ["-H", f"Cookie: {cookie}"]
    argv.append(url)
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_kib(rss_pids))
            await asyncio.sleep(RSS_SAMPLE_SECONDS)

    cpu_before = cpu_seconds(cpu_root) if cpu_root else 0.0
    sampler = asyncio.create_task(sample()) if rss_pids else None
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=seconds + 30)
    except TimeoutError as exc:
        process.kill()
        await process.wait()
        raise LoadError(f"wrk did not finish: {' '.join(argv[:-1])}") from exc
    finally:
        if sampler is not None:
            sampler.cancel()
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise LoadError(f"wrk failed ({process.returncode}):\n{text}")
    result = parse_wrk(text)
    cpu_us = math.nan
    if cpu_root and result.requests:
        cpu_us = (cpu_seconds(cpu_root) - cpu_before) * 1e6 / result.requests
    return WrkResult(**{**result.as_dict(), "peak_rss_kib": peak, "cpu_us_per_request": cpu_us})


async def _curl(argv: list[str], *, max_seconds: int) -> tuple[float, int, int]:
    process = await asyncio.create_subprocess_exec(
        CURL,
        "--silent",
        "--show-error",
        "--output",
        "/dev/null",
        "--max-time",
        str(max_seconds),
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=max_seconds + 10)
    if process.returncode != 0:
        raise LoadError(f"curl failed ({process.returncode}): {err.decode(errors='replace')}")
    speed, size, status = out.decode().split()
    return float(speed), int(float(size)), int(status)


async def download(url: str, *, cookie: str | None, expect_bytes: int, max_seconds: int) -> float:
    """GET `url` to /dev/null; MB/s."""
    argv = ["--write-out", "%{speed_download} %{size_download} %{http_code}"]
    if cookie:
        argv += ["--header", f"Cookie: {cookie}"]
    speed, size, status = await _curl([*argv, url], max_seconds=max_seconds)
    if status != 200 or size != expect_bytes:
        raise LoadError(f"download of {url}: status {status}, {size} of {expect_bytes} bytes")
    return speed / 1e6


async def upload(
    url: str, *, cookie: str | None, path: str, expect_bytes: int, max_seconds: int
) -> float:
    """PUT the file at `path` to `url` (Content-Length framing, no Expect); MB/s."""
    argv = [
        "--write-out",
        "%{speed_upload} %{size_upload} %{http_code}",
        "--header",
        "Expect:",
        "--upload-file",
        path,
    ]
    if cookie:
        argv += ["--header", f"Cookie: {cookie}"]
    speed, size, status = await _curl([*argv, url], max_seconds=max_seconds)
    if status != 200 or size != expect_bytes:
        raise LoadError(f"upload to {url}: status {status}, {size} of {expect_bytes} bytes")
    return speed / 1e6
