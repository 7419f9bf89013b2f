"""Where sidecar's time goes under load: `.venv/bin/python bench/profile.py [--seconds S]`.

Starts nginx, the provider and one sidecar (`server.workers: 1`, so one process holds every
request) exactly as bench/run.py does, signs in, then runs `wrk -c32` against sidecar while py-spy
(`pip install py-spy` into .venv) samples the sidecar process. Writes the raw collapsed stacks
to bench/results/profile.raw.txt (flamegraph.pl and speedscope read them) and prints the
functions with the largest share of samples: inclusive (the function and all it calls) and self
(its own code), so a change to the hot path can be judged by numbers before and after. `--login
big200-x` profiles a 200-group session, `--pad 12704` pads the Cookie header as run.py does;
sidecar inherits this command's environment (e.g. PYTHONPATH pointing at an extra package for
an experiment). py-spy pauses the process for each
sample: `--nonblocking` would disturb it less but records torn stacks (a frame alone as a root),
which inflated some shares.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from loadgen import run_wrk
from run import padded
from signin import sign_in
from stack import BACKEND_BODY, Stack, free_port

RESULTS = Path(__file__).resolve().parent / "results"
PY_SPY = Path(sys.executable).parent / "py-spy"


def _short(frame: str) -> str:
    """`func (/long/path/module.py:12)` -> `func module.py:12`."""
    name, _, where = frame.partition(" (")
    return f"{name} {where.rstrip(')').rsplit('/', 1)[-1]}"


def summarize(raw: Path, top: int) -> str:
    """Inclusive and self shares of the collapsed stacks in `raw` (py-spy --format raw)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [_short(frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"{total} samples", "", "inclusive %  function (file:line)"]
    lines += [f"{100 * n / total:10.1f}  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self %       function (file:line)"]
    lines += [f"{100 * n / total:10.1f}  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


async def profile(args: argparse.Namespace) -> int:
    if not PY_SPY.exists() and shutil.which("py-spy") is None:
        print("py-spy is missing: .venv/bin/pip install py-spy", file=sys.stderr)
        return 1
    py_spy = str(PY_SPY) if PY_SPY.exists() else "py-spy"
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sidecar-profile-") as tmp:
        stack = Stack(Path(tmp))
        try:
            nginx = await stack.start_nginx(large_file_bytes=1024)
            provider = await stack.start_provider()
            port = free_port()
            client = await stack.register_client(
                provider.url, [f"http://127.0.0.1:{port}/oauth2/callback"]
            )
            sidecar = await stack.start_sidecar(
                "sidecar",
                port=port,
                backend_url=nginx.url,
                issuer=provider.url,
                client=client,
                workers=1,
            )
            url = sidecar.url + args.path
            signed = await sign_in(url, args.login, expect_body=BACKEND_BODY)
            cookie = signed.cookie_header()
            if args.pad:
                cookie = padded(cookie, args.pad)
            await run_wrk(url, connections=args.connections, seconds=2, cookie=cookie)
            raw = RESULTS / "profile.raw.txt"
            recorder = await asyncio.create_subprocess_exec(
                py_spy,
                "record",
                "--pid",
                str(sidecar.pid),
                "--rate",
                "250",
                "--duration",
                str(args.seconds),
                "--format",
                "raw",
                "--output",
                str(raw),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result = await run_wrk(
                url, connections=args.connections, seconds=args.seconds, cookie=cookie
            )
            await asyncio.wait_for(recorder.wait(), timeout=args.seconds + 30)
        finally:
            stack.close()
    print(
        f"sidecar (1 worker, py-spy attached) under wrk -c{args.connections}: "
        f"{result.rps:,.0f} req/s, p99 {result.p99_ms:.2f} ms"
    )
    print(summarize(raw, args.top))
    print(f"\nraw stacks: {raw}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--path", default="/")
    parser.add_argument("--login", default="bench-user", help="big200-x for a 200-group session")
    parser.add_argument(
        "--pad", type=int, help="pad the Cookie header to this many bytes, as run.py does"
    )
    parser.add_argument("--top", type=int, default=40)
    return asyncio.run(profile(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
