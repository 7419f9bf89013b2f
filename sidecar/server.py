"""Running sidecar: listening sockets, parser limits, signals and the graceful drain.

`serve(config)` configures logging, builds the app with `create_app`, listens on `server.listen`
(and serves health and readiness alone on `server.internal_listen` when set), and runs until
SIGTERM or SIGINT. Then it stops accepting connections at once, lets requests in flight finish
for up to `server.shutdown_grace_seconds`, closes the upstream pool and returns 0 — a Kubernetes
rolling update loses no request. uvloop is used when it is installed. With `server.workers` > 1
the process forks that many workers sharing the port (SO_REUSEPORT), forwards SIGTERM/SIGINT to
them and exits 0 when all of them drained cleanly. With the config file's path, SIGHUP and changes
of the file reload the configuration live (`sidecar.reload`; each worker reloads its own copy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from sidecar import __version__, keys
from sidecar.app import build_handler_args, create_health_app
from sidecar.config.model import SidecarConfig, parse_listen
from sidecar.observability.logging import configure_logging
from sidecar.reload import ReloadingRunner, ReloadingServer

logger = logging.getLogger("sidecar.server")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def describe_upstream(url: str) -> str:
    """An upstream URL fit for a log line: any user:password@ part removed."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc).geturl()


async def _start(runner: web.BaseRunner, listen: str, *, reuse_port: bool) -> web.TCPSite:
    host, port = parse_listen(listen)
    await runner.setup()
    site = web.TCPSite(
        runner, host, port, backlog=1024, reuse_address=True, reuse_port=reuse_port or None
    )
    await site.start()
    return site


async def run_until_signalled(
    config: SidecarConfig,
    *,
    started: Callable[[list[str]], None] | None = None,
    worker: int | None = None,
    config_path: str | None = None,
) -> None:
    """Serve `config` until SIGTERM/SIGINT, then drain. `started` gets the bound addresses.
    With `config_path`, SIGHUP and changes of that file reload it live (see `sidecar.reload`)."""
    grace = config.server.shutdown_grace_seconds
    reloading = ReloadingServer(config, path=config_path)
    runners: list[web.BaseRunner] = [
        ReloadingRunner(
            reloading,
            handler_args=build_handler_args(config),
            handle_signals=False,
            shutdown_timeout=grace,
        )
    ]
    if config.server.internal_listen:
        health_app = create_health_app(config, reloading.app)
        reloading.mirror_readiness(health_app[keys.READINESS])
        runners.append(web.AppRunner(health_app, handle_signals=False, shutdown_timeout=1))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloading.request_reload)
    watcher = loop.create_task(reloading.watch())
    try:
        shared = worker is not None
        await _start(runners[0], config.server.listen, reuse_port=shared)
        if config.server.internal_listen:
            await _start(runners[1], config.server.internal_listen, reuse_port=shared)
        addresses = [f"{a[0]}:{a[1]}" for r in runners for a in r.addresses]
        logger.info(
            "sidecar %s listening on %s",
            __version__,
            ", ".join(addresses),
            extra={
                "listen": addresses[0] if addresses else config.server.listen,
                "internal_listen": addresses[1] if len(addresses) > 1 else "",
                "upstreams": [f"{u.path} -> {describe_upstream(u.url)}" for u in config.upstreams],
                "provider": bool(config.provider),
                "worker": worker if worker is not None else 0,
                "pid": os.getpid(),
            },
        )
        if started is not None:
            started(addresses)
        await stop.wait()
        logger.info(
            "shutting down: no new connections; in-flight requests get %ss to finish", grace
        )
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        # Stops listening first, then waits for in-flight requests up to the grace period,
        # then runs the cleanup contexts (closing the upstream pool).
        for runner in runners:
            await runner.cleanup()
    logger.info("sidecar stopped")


def run_coroutine(main: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main)


_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
_SUPERVISOR_SIGNALS = _STOP_SIGNALS | {signal.SIGCHLD, signal.SIGHUP}


def _worker_main(config: SidecarConfig, worker: int, config_path: str | None) -> None:
    # A SIGHUP passed on before this worker's loop handles it must not end the worker.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SUPERVISOR_SIGNALS)
    run_coroutine(run_until_signalled(config, worker=worker, config_path=config_path))


def _supervise(config: SidecarConfig, config_path: str | None = None) -> int:
    """Fork `server.workers` workers on one port, pass stop signals on, wait for their drain."""
    context = multiprocessing.get_context("fork")
    # Blocked before forking so no signal can slip in between; each worker unblocks its own.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
    workers = [
        context.Process(
            target=_worker_main, args=(config, n, config_path), name=f"sidecar-worker-{n}"
        )
        for n in range(config.server.workers)
    ]
    for process in workers:
        process.start()
    logger.info("supervising %d workers", len(workers), extra={"pid": os.getpid()})
    failed = False
    try:
        while True:
            received = signal.sigwait(_SUPERVISOR_SIGNALS)
            if received in _STOP_SIGNALS:
                break
            if received == signal.SIGHUP:  # each worker reloads its own copy
                for process in workers:
                    if process.is_alive() and process.pid is not None:
                        os.kill(process.pid, signal.SIGHUP)
                continue
            died = [p for p in workers if not p.is_alive()]
            if died:
                logger.error(
                    "worker %s exited with %s; stopping the others",
                    died[0].name,
                    died[0].exitcode,
                )
                failed = True
                break
    finally:
        for process in workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in workers:
            process.join(config.server.shutdown_grace_seconds + 10)
            if process.is_alive():
                process.kill()
                process.join()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SUPERVISOR_SIGNALS)
    if failed or any(process.exitcode != 0 for process in workers):
        return 1
    logger.info("sidecar stopped")
    return 0


def serve(config: SidecarConfig, config_path: str | None = None) -> int:
    """Run sidecar with `config` until signalled; the process exit code (0 after a clean drain).
    `config_path`, the file `config` came from, is watched and reloaded live."""
    configure_logging(config.logging)
    if config.server.workers > 1:
        return _supervise(config, config_path)
    run_coroutine(run_until_signalled(config, config_path=config_path))
    return 0
