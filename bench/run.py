"""sidecar's benchmark in one command: `.venv/bin/python bench/run.py [--quick] [--duration S]`.

Sets up on 127.0.0.1, each from a private config in a temporary directory: nginx as the fast
backend, the real provider (oidc-provider, tests/e2e/provider.mjs), sidecar in front of nginx, and
the peer: Apache httpd (event MPM) with mod_auth_openidc (client-cookie sessions, PKCE, claims as
headers) plus Apache's plain mod_proxy as "a proxy without authentication". It signs in to each
proxy with a scripted browser (bench/signin.py), then measures every target in turn with wrk
(bench/loadgen.py), each request carrying a Cookie header of the same length (the real session for
the proxies, padding for the others): throughput and latency at 1, 32, 256 and 1024 connections,
a ~200-group session, 10 vs 1,000 routes, 1 GiB down and up through sidecar, the sign-in round
trip and resident memory. Every measurement is repeated (`--repeat`, default 3) and the medians
are reported. Prints a Markdown table (bench/report.py) and writes bench/results/latest.json.
`--quick` makes everything tiny (1 s runs, 1 repeat, 16 MiB transfers) and skips the peer when
Apache is not installed: the test suite runs it to prove the benchmark works. Setup of the
machine: bench/setup.sh (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from loadgen import LoadError, WrkResult, download, have_tools, run_wrk, upload
from report import check_targets, render_table
from signin import SignIn, SignInError, sign_in
from stack import (
    APACHE,
    APACHE_OIDC_MODULE,
    BACKEND_BODY,
    NGINX,
    NGINX_ECHO_MODULE,
    REPO,
    Service,
    Stack,
    StackError,
    free_port,
    peak_rss_kib,
    process_tree,
    reset_peak_rss,
    rss_kib,
)

RESULTS = Path(__file__).resolve().parent / "results"
SMALL_USER = "bench-user"
LARGE_GROUPS = 200
LARGE_USER = f"big{LARGE_GROUPS}-bench"
PAD_NAME = "bench_pad"
ROUTES_PATH = "/zz/page"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny runs: proves it works")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 10; quick 1)")
    parser.add_argument("--repeat", type=int, help="runs per measurement (default 3; quick 1)")
    parser.add_argument(
        "--connections", default="1,32,256,1024", help="connection levels (default 1,32,256,1024)"
    )
    parser.add_argument(
        "--stream-mib", type=int, help="transfer size in MiB (default 1024; quick 16)"
    )
    parser.add_argument(
        "--sign-ins", type=int, help="sign-in round trips timed (default 7; quick 1)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="sidecar server.workers (default nproc)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip Apache")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json", help="JSON file")
    parser.add_argument(
        "--table", type=Path, metavar="JSON", help="print the table of a saved run and exit"
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (1 if args.quick else 10)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.stream_mib = args.stream_mib or (16 if args.quick else 1024)
    args.sign_ins = args.sign_ins or (1 if args.quick else 7)
    args.levels = [int(level) for level in args.connections.split(",")]
    return args


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def padded(cookie: str, length: int) -> str:
    """`cookie` plus a filler cookie, so the Cookie header is exactly `length` characters."""
    prefix = f"{cookie}; {PAD_NAME}=" if cookie else f"{PAD_NAME}="
    if len(prefix) >= length:
        raise ValueError("pad length too short")
    return prefix + "x" * (length - len(prefix))


def median_of(results: list[WrkResult]) -> dict[str, Any]:
    """Medians of each figure over the repeats, with the raw runs."""
    keys = ("rps", "p50_ms", "p90_ms", "p99_ms", "peak_rss_kib", "cpu_us_per_request")
    out: dict[str, Any] = {key: statistics.median(getattr(r, key) for r in results) for key in keys}
    out["errors"] = sum(r.errors for r in results)
    out["error_kinds"] = {
        kind: sum(r.error_kinds.get(kind, 0) for r in results) for kind in results[0].error_kinds
    }
    out["non_2xx_3xx"] = sum(r.non_2xx_3xx for r in results)
    out["runs"] = [r.as_dict() for r in results]
    return out


def _version(argv: list[str], *, first_line: bool = True) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "absent"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if first_line and text else text


def _dpkg(package: str) -> str:
    return _version(["dpkg-query", "-W", "-f=${Version}", package])


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    provider_pkg = REPO / "tests/e2e/node_modules/oidc-provider/package.json"
    try:
        provider_version = json.loads(provider_pkg.read_text())["version"]
    except (OSError, ValueError, KeyError):
        provider_version = "absent"
    import sidecar

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _version(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "versions": {
            "sidecar": sidecar.__version__,
            "sidecar_commit": _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
            # Files of sidecar/ that differ from that commit when the run ended (work in progress).
            "sidecar_uncommitted": _version(
                ["git", "-C", str(REPO), "status", "--porcelain", "--", "sidecar"],
                first_line=False,
            ).splitlines(),
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "nginx": _dpkg("nginx"),
            "apache2": _dpkg("apache2"),
            "mod_auth_openidc": _dpkg("libapache2-mod-auth-openidc"),
            "wrk": _dpkg("wrk"),
            "node": _version(["node", "--version"]),
            "oidc-provider": provider_version,
        },
    }


async def check_session(url: str, cookie: str, *, what: str) -> None:
    """The cookie header really reaches the backend (200, the backend's body, no redirect)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Cookie": cookie}, allow_redirects=False) as response,
    ):
        body = await response.text()
        if response.status != 200 or body != BACKEND_BODY:
            raise StackError(f"{what}: GET {url} gave {response.status} {body[:200]!r}")


class Bench:
    """One run: the services, the signed-in sessions, and the results dictionary being filled."""

    def __init__(self, args: argparse.Namespace, stack: Stack) -> None:
        self.args = args
        self.stack = stack
        self.results: dict[str, Any] = {}
        self.notes: list[str] = []
        self.urls: dict[str, str] = {}
        self.rss_roots: dict[str, int] = {}

    def pids(self, name: str) -> list[int]:
        root = self.rss_roots.get(name)
        return process_tree(root) if root else []

    async def measure(
        self, targets: dict[str, tuple[str, str]], *, connections: int
    ) -> dict[str, dict[str, Any]]:
        """Each target (name -> (url, cookie header)) under wrk at `connections`, `--repeat`
        times; the repeats go round the targets in turn, so a burst of other work on the machine
        lands on all of them rather than on one, and the medians are compared."""
        runs: dict[str, list[WrkResult]] = {name: [] for name in targets}
        for _ in range(self.args.repeat):
            for name, (url, cookie) in targets.items():
                result = await run_wrk(
                    url,
                    connections=connections,
                    seconds=self.args.duration,
                    cookie=cookie,
                    rss_pids=self.pids(name),
                    cpu_root=self.rss_roots.get(name),
                )
                runs[name].append(result)
        summaries: dict[str, dict[str, Any]] = {}
        for name, (url, cookie) in targets.items():
            await check_session(url, cookie, what=f"{name} after the load")
            summary = summaries[name] = median_of(runs[name])
            summary["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
            log(
                f"  {name:<16} c={connections:<5} {summary['rps']:>10,.0f} req/s  "
                f"p50 {summary['p50_ms']:.2f} ms  p99 {summary['p99_ms']:.2f} ms  "
                f"CPU {summary['cpu_us_per_request']:.0f} us/req"
                + (f"  errors {summary['error_kinds']}" if summary["errors"] else "")
            )
        return summaries

    async def warm_up(self, targets: dict[str, tuple[str, str]]) -> None:
        for url, cookie in targets.values():
            await run_wrk(url, connections=32, seconds=2, cookie=cookie)


async def timed_sign_ins(urls: dict[str, str], count: int, user: str) -> dict[str, Any]:
    """`count` sign-ins at each proxy, taking turns (as the load rounds do), after one untimed
    sign-in each: the first after the streaming section paid for what that left behind (36 ms
    against 16-23 for the next ones in the 11:08 run), and only the proxy measured first paid."""
    for url in urls.values():
        await sign_in(url + "/", user, expect_body=BACKEND_BODY)
    seconds: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(count):
        for name, url in urls.items():
            seconds[name].append((await sign_in(url + "/", user, expect_body=BACKEND_BODY)).seconds)
    return {
        name: {"median_ms": statistics.median(runs) * 1000, "runs_ms": [s * 1000 for s in runs]}
        for name, runs in seconds.items()
    }


def routes_config(count: int) -> list[dict[str, Any]]:
    """`count` routes needing sign-in: 90% path prefixes, 10% regular expressions; the benchmark's
    requests match the last one, so every earlier route is passed over."""
    routes: list[dict[str, Any]] = []
    for i in range(count - 1):
        if i % 10 == 9:
            routes.append({"regex": f"^/re{i:04d}/[a-z]+$", "access": "authenticated"})
        else:
            routes.append({"path": f"/app{i:04d}", "access": "authenticated"})
    routes.append({"path": "/zz", "access": "authenticated"})
    return routes


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    load_at_start = os.getloadavg()
    missing = have_tools()
    missing += [path for path in (NGINX, NGINX_ECHO_MODULE) if not os.access(path, os.R_OK)]
    if missing:
        raise StackError(f"missing: {', '.join(missing)} (run bench/setup.sh as root)")
    peer = not args.no_peer and all(os.access(p, os.R_OK) for p in (APACHE, APACHE_OIDC_MODULE))
    notes: list[str] = []
    if not peer:
        if not args.quick and not args.no_peer:
            raise StackError("apache2 / mod_auth_openidc missing (run bench/setup.sh as root)")
        notes.append(
            "peer (Apache + mod_auth_openidc) skipped: "
            + ("--no-peer" if args.no_peer else "not installed")
        )

    from sidecar.config.model import SidecarConfig

    routes_supported = "routes" in SidecarConfig.model_fields
    stream_bytes = args.stream_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp:
        stack = Stack(Path(tmp))
        bench = Bench(args, stack)
        bench.notes = notes
        try:
            log(f"starting nginx, provider ({tmp})")
            nginx = await stack.start_nginx(large_file_bytes=stream_bytes)
            provider = await stack.start_provider()
            ports = {"sidecar": free_port(), "sidecar_1w": free_port()}
            if routes_supported:
                ports |= {"routes_10": free_port(), "routes_1000": free_port()}
            client = await stack.register_client(
                provider.url,
                [f"http://127.0.0.1:{port}/oauth2/callback" for port in ports.values()],
            )
            log(f"starting sidecar ({args.workers} workers)")
            sidecar = await stack.start_sidecar(
                "sidecar",
                port=ports["sidecar"],
                backend_url=nginx.url,
                issuer=provider.url,
                client=client,
                workers=args.workers,
            )
            bench.urls["backend"] = nginx.url
            bench.rss_roots["backend"] = nginx.pid
            apache: Service | None = None
            if peer:
                log("starting apache (mod_auth_openidc + plain mod_proxy)")
                oidc_port = free_port()
                apache_client = await stack.register_client(
                    provider.url, [f"http://127.0.0.1:{oidc_port}/redirect_uri"]
                )
                apache = await stack.start_apache(
                    backend_url=nginx.url,
                    issuer=provider.url,
                    client=apache_client,
                    oidc_port=oidc_port,
                )
                bench.urls["apache_plain"] = apache.info["plain_url"]
                bench.urls["apache_oidc"] = apache.url
                bench.rss_roots["apache_plain"] = apache.pid
                bench.rss_roots["apache_oidc"] = apache.pid
            bench.results["sidecar_instances"] = {"sidecar": dict(sidecar.info)}
            bench.urls["sidecar"] = sidecar.url
            bench.rss_roots["sidecar"] = sidecar.pid

            log("signing in (small and large sessions)")
            proxies: list[str] = [name for name in ("apache_oidc", "sidecar") if name in bench.urls]
            small: dict[str, SignIn] = {}
            large: dict[str, SignIn] = {}
            for name in proxies:
                small[name] = await sign_in(
                    bench.urls[name] + "/", SMALL_USER, expect_body=BACKEND_BODY
                )
                large[name] = await sign_in(
                    bench.urls[name] + "/", LARGE_USER, expect_body=BACKEND_BODY
                )
            small_len = max(len(s.cookie_header()) for s in small.values()) + 32
            large_len = max(len(s.cookie_header()) for s in large.values()) + 32
            cookies = {
                name: padded(small[name].cookie_header() if name in small else "", small_len)
                for name in bench.urls
            }
            large_cookies = {
                name: padded(large[name].cookie_header() if name in large else "", large_len)
                for name in ("backend", *proxies)
            }
            bench.results["sessions"] = {
                name: {
                    "small_cookie_bytes": len(small[name].cookie_header()),
                    "small_cookies": len(small[name].cookies),
                    "large_cookie_bytes": len(large[name].cookie_header()),
                    "large_cookies": len(large[name].cookies),
                }
                for name in proxies
            }
            bench.results["cookie_header_bytes"] = {"small": small_len, "large": large_len}
            for name, url in bench.urls.items():
                await check_session(url + "/", cookies[name], what=name)
            for name in large_cookies:
                await check_session(
                    bench.urls[name] + "/", large_cookies[name], what=f"{name} (large)"
                )

            rss: dict[str, dict[str, float]] = {}
            for name in bench.urls:
                rss[name] = {"idle_mb": rss_kib(bench.pids(name)) / 1024}

            main_targets = {name: (url + "/", cookies[name]) for name, url in bench.urls.items()}
            if not args.quick:
                log("warming up")
                await bench.warm_up(main_targets)
            log(f"connection levels {args.levels}, {args.duration}s x {args.repeat}")
            bench.results["connections"] = {
                str(level): await bench.measure(main_targets, connections=level)
                for level in args.levels
            }
            load_level = "32" if "32" in bench.results["connections"] else str(args.levels[-1])
            for name in bench.urls:
                entry = bench.results["connections"][load_level].get(name, {})
                rss[name]["load_mb"] = entry.get("peak_rss_kib", 0) / 1024
                rss[name]["load_connections"] = int(load_level)
            bench.results["rss"] = rss

            log(f"large session (~{LARGE_GROUPS} groups) beside the small one, 32 connections")
            large_targets = {
                name: (bench.urls[name] + "/", cookie) for name, cookie in large_cookies.items()
            }
            for name in proxies:
                large_targets[f"{name}_small"] = (bench.urls[name] + "/", cookies[name])
                bench.rss_roots[f"{name}_small"] = bench.rss_roots[name]
                # Its own cookies only: the padding to the peer's 12 KB is not sidecar's session.
                large_targets[f"{name}_unpadded"] = (
                    bench.urls[name] + "/",
                    large[name].cookie_header(),
                )
                bench.rss_roots[f"{name}_unpadded"] = bench.rss_roots[name]
            bench.results["large_session"] = await bench.measure(large_targets, connections=32)

            log("sidecar with 1 worker beside the main one")
            one = await stack.start_sidecar(
                "sidecar_1w",
                port=ports["sidecar_1w"],
                backend_url=nginx.url,
                issuer=provider.url,
                client=client,
                workers=1,
            )
            bench.results["sidecar_instances"]["sidecar_1w"] = dict(one.info)
            one_in = await sign_in(one.url + "/", SMALL_USER, expect_body=BACKEND_BODY)
            bench.rss_roots["sidecar_1w"] = one.pid
            one_targets = {
                "sidecar_1w": (one.url + "/", padded(one_in.cookie_header(), small_len)),
                "sidecar": main_targets["sidecar"],
            }
            bench.results["sidecar_one_worker"] = {
                str(level): (await bench.measure(one_targets, connections=level))["sidecar_1w"]
                for level in args.levels
                if level in (1, 32)
            }
            one.stop()

            await measure_routes(
                bench, ports, nginx, provider, client, cookies, small_len, routes_supported
            )
            await measure_streaming(bench, cookies, stream_bytes, Path(tmp))

            log(f"sign-in round trips ({args.sign_ins} each)")
            bench.results["sign_in"] = await timed_sign_ins(
                {name: bench.urls[name] for name in proxies}, args.sign_ins, SMALL_USER
            )
        finally:
            stack.close()
    bench.results["notes"] = bench.notes
    checks = check_targets(bench.results)
    return {
        "meta": {
            "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
            "elapsed_seconds": round(time.time() - started, 1),
            "quick": args.quick,
            "duration_seconds": args.duration,
            "repeat": args.repeat,
            "connection_levels": args.levels,
            "stream_bytes": stream_bytes,
            "sidecar_workers": args.workers,
            "peer": peer,
            "machine": machine(),
            # Other work on the machine skews figures; ratios from the same rounds hold up best.
            "loadavg_at_start": [round(x, 2) for x in load_at_start],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "load_generator": "wrk -t1 --latency --timeout 5s",
        },
        "results": bench.results,
        "targets": checks,
    }


async def measure_routes(
    bench: Bench,
    ports: dict[str, int],
    nginx: Service,
    provider: Service,
    client: dict[str, Any],
    cookies: dict[str, str],
    cookie_len: int,
    supported: bool,
) -> None:
    if not supported:
        bench.results["routes"] = {"skipped": "sidecar's config has no routes yet"}
        bench.notes.append("10 vs 1,000 routes skipped: sidecar's config has no `routes` yet")
        log("routes: skipped (no routes in sidecar's config)")
        return
    log("10 vs 1,000 routes (and none), 32 connections")
    targets: dict[str, tuple[str, str]] = {}
    for count in (10, 1000):
        name = f"routes_{count}"
        try:
            service = await bench.stack.start_sidecar(
                name,
                port=ports[name],
                backend_url=nginx.url,
                issuer=provider.url,
                client=client,
                workers=bench.args.workers,
                routes=routes_config(count),
            )
        except StackError as exc:
            bench.results["routes"] = {"skipped": f"sidecar refused the routes: {exc}"[:2000]}
            bench.notes.append("10 vs 1,000 routes skipped: sidecar refused the routes config")
            return
        bench.rss_roots[name] = service.pid
        bench.results["sidecar_instances"][name] = dict(service.info)
        signed = await sign_in(service.url + ROUTES_PATH, SMALL_USER, expect_body=BACKEND_BODY)
        targets[name] = (service.url + ROUTES_PATH, padded(signed.cookie_header(), cookie_len))
    targets["sidecar"] = (bench.urls["sidecar"] + ROUTES_PATH, cookies["sidecar"])
    measured = await bench.measure(targets, connections=32)
    bench.results["routes"] = {
        "10": measured["routes_10"],
        "1000": measured["routes_1000"],
        "none": measured["sidecar"],
        "request_path": ROUTES_PATH,
    }


async def measure_streaming(bench: Bench, cookies: dict[str, str], size: int, tmp: Path) -> None:
    log(f"streaming {size // (1024 * 1024)} MiB down and up")
    upload_file = tmp / "upload.bin"
    with upload_file.open("wb") as handle:
        handle.truncate(size)
    max_seconds = max(60, size // (5 * 1024 * 1024))
    streaming: dict[str, dict[str, Any]] = {"download": {}, "upload": {}}
    # Unmeasured first transfers: the sparse file's pages enter the page cache, nginx's temp
    # files get their first pages; otherwise whichever target goes first pays for it.
    direct = bench.urls["backend"]
    await download(direct + "/large.bin", cookie=None, expect_bytes=size, max_seconds=max_seconds)
    await upload(
        direct + "/upload",
        cookie=None,
        path=str(upload_file),
        expect_bytes=size,
        max_seconds=max_seconds,
    )
    names = [name for name in bench.urls if name != "apache_plain"]
    speeds: dict[tuple[str, str], list[float]] = {}
    peaks: dict[tuple[str, str], list[float]] = {}
    failed: set[str] = set()
    for _ in range(bench.args.repeat):  # rounds go round the targets, as for wrk
        for name in names:
            if name in failed:
                continue
            url, pids = bench.urls[name], bench.pids(name)
            for way in ("download", "upload"):
                reset_peak_rss(pids)
                try:
                    if way == "download":
                        speed = await download(
                            url + "/large.bin",
                            cookie=cookies[name],
                            expect_bytes=size,
                            max_seconds=max_seconds,
                        )
                    else:
                        speed = await upload(
                            url + "/upload",
                            cookie=cookies[name],
                            path=str(upload_file),
                            expect_bytes=size,
                            max_seconds=max_seconds,
                        )
                        # nginx counts the request line, headers and any chunk framing too.
                        received = bench.stack.last_upload_bytes()
                        if not size <= received <= size + 2**20:
                            raise LoadError(f"the backend read {received} bytes for {size}")
                except LoadError as exc:
                    bench.notes.append(f"{way} through {name} failed: {exc}")
                    log(f"  {way} {name}: FAILED {exc}")
                    failed.add(name)
                    break
                speeds.setdefault((way, name), []).append(speed)
                peak = max(peak_rss_kib(pids).values(), default=0) / 1024
                peaks.setdefault((way, name), []).append(peak)
    for (way, name), runs in speeds.items():
        streaming[way][name] = {
            "mb_s": statistics.median(runs),
            "peak_rss_mb": max(peaks[way, name]),
            "runs_mb_s": runs,
        }
        log(
            f"  {way:<8} {name:<12} {statistics.median(runs):8.1f} MB/s  "
            f"peak RSS {max(peaks[way, name]):.1f} MB (largest process)"
        )
    bench.results["streaming"] = streaming


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table is not None:
        saved = json.loads(args.table.read_text())
        print(render_table(saved["results"], check_targets(saved["results"])))
        return 0
    try:
        report = asyncio.run(run(args))
    except (StackError, LoadError, SignInError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(render_table(report["results"], report["targets"]))
    for note in report["results"].get("notes", []):
        print(f"note: {note}")
    print(f"\nJSON: {args.output}  ({report['meta']['elapsed_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
