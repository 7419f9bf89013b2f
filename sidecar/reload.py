"""Live configuration reload: a new config is validated, built whole and swapped in for new work.

Design. A *generation* is one complete `web.Application` built by `create_app` for one config
(route table, header plan, gate and session services, provider directory, upstream pool), started
like any aiohttp app. sidecar does not serve an application directly: its listening socket serves
one low-level `web.Server` whose handler hands each request to the generation that is current when
the handler starts; the generation counts the request in flight until its handler returns. A reload
(SIGHUP, or a change of the config file seen by polling every `POLL_SECONDS`) loads and validates
the file; an invalid file is logged problem by problem and the running generation stays. A valid
one is built and started, given up to `READY_TIMEOUT_SECONDS` to become ready (provider discovery
and keys), then made current in one assignment: new requests — including the next request on a
kept-alive connection — go to it, requests already in flight finish on the old one, which is shut
down and cleaned up (pool and provider client closed) once its last request has returned. This
is simpler and safer than swapping parts of one app: nothing is ever half-updated, and the old
generation is untouched until it is idle.

What carries over: the metrics (one `Metrics` object for every generation), what components keep
in the shared `CarryOver` (the per-process back-channel logout revocations, so a revoked session
stays revoked), and the sessions, because cookies are decoded with keys derived from
`session.secrets` — the same secrets decode the same cookies; a secret removed from the list ends
the sessions it encrypted. What does not: the refresh single-flight/grace cache (per generation;
with the Redis store the refresh lock is shared anyway), and settings that belong to the listening
socket or the process (`server.listen`, `internal_listen`, `workers`, the parser limits,
`shutdown_grace_seconds`): a change to those is logged as needing a restart and is ignored.

The file fingerprint is the resolved path plus device, inode, size and mtime of the file it
resolves to, so a Kubernetes ConfigMap update — which writes a new directory and swaps the
`..data` symlink the mounted file points through — is seen as a change, as are in-place edits.
Secrets read through `*_file` keys are re-read on every reload, but only a change of the config
file itself (or SIGHUP) triggers one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from sidecar import keys
from sidecar.app import create_app
from sidecar.carry_over import CarryOver
from sidecar.config.load import load_config
from sidecar.config.model import SidecarConfig
from sidecar.errors import ConfigError
from sidecar.head_timeout import HeadTimeoutServer
from sidecar.observability.health import ReadinessCheck, run_checks
from sidecar.observability.logging import configure_logging
from sidecar.observability.metrics import Metrics

logger = logging.getLogger("sidecar.reload")

POLL_SECONDS = 2.0
SETTLE_SECONDS = 0.2  # a changed file must keep its new fingerprint this long (half-written files)
READY_TIMEOUT_SECONDS = 15.0
RETIRE_WAIT_SECONDS = 5.0  # at shutdown, for retired generations still closing
_READY_POLL_SECONDS = 0.05

# Settings of the socket and the process: a reload cannot change them.
RESTART_ONLY = (
    "listen",
    "internal_listen",
    "workers",
    "max_request_line_bytes",
    "max_header_bytes",
    "max_headers",
    "header_read_timeout_seconds",
    "shutdown_grace_seconds",
)

Fingerprint = tuple[str, int, int, int, int]


def fingerprint(path: str | Path) -> Fingerprint | None:
    """What identifies the config file's current content without reading it; None if missing."""
    try:
        resolved = os.path.realpath(path)
        stat = os.stat(resolved)
    except OSError:
        return None
    return (resolved, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def restart_only_changes(old: SidecarConfig, new: SidecarConfig) -> list[str]:
    """The `server.*` keys that differ between two configs but need a restart to change."""
    return [
        f"server.{name}"
        for name in RESTART_ONLY
        if getattr(old.server, name) != getattr(new.server, name)
    ]


def describe_changes(old: SidecarConfig, new: SidecarConfig) -> list[str]:
    """Top-level config sections that differ (for the reload log line; never their values)."""
    return [name for name in SidecarConfig.model_fields if getattr(old, name) != getattr(new, name)]


class Generation:
    """One started application for one config, and how many requests it is serving."""

    def __init__(self, config: SidecarConfig, app: web.Application, number: int) -> None:
        self.config = config
        self.app = app
        self.number = number
        self.in_flight = 0
        self.retired = False
        self._server: web.Server | None = None
        # The started app's handler (routing, middlewares), set by `start`. Whoever calls it
        # counts the request in `in_flight` before the first await and calls `finished` after.
        self.request_handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
        self._idle = asyncio.Event()
        self._shut_down = False
        self._closing: asyncio.Future[None] | None = None

    @property
    def readiness(self) -> list[ReadinessCheck]:
        return self.app[keys.READINESS]

    def ready(self) -> bool:
        return all(result.ok for result in run_checks(self.readiness))

    async def start(self) -> None:
        """Start the app as aiohttp's AppRunner would: startup (cleanup contexts), then freeze."""
        loop = asyncio.get_running_loop()
        self.app.on_startup.freeze()
        await self.app.startup()
        # The app's own request handler and factory (routing, middlewares); never listens itself.
        self._server = self.app._make_handler(loop=loop)
        self.request_handler = self._server.request_handler

    def make_request(self, *args: Any) -> web.BaseRequest:
        assert self._server is not None
        return self._server.request_factory(*args)

    def finished(self) -> None:
        """One request served by this generation has returned."""
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def close_when_idle(self) -> None:
        """Wait for the requests in flight, then run the app's shutdown and cleanup hooks."""
        self.retired = True
        if self.in_flight:
            self._idle.clear()
            while self.in_flight:
                await self._idle.wait()
                self._idle.clear()
        await self.close()

    async def shutdown(self) -> None:
        """The app's on_shutdown hooks (once)."""
        if not self._shut_down:
            self._shut_down = True
            await self.app.shutdown()

    async def close(self) -> None:
        """Shutdown and cleanup hooks, once; a second caller waits for the first to finish."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        try:
            await self.shutdown()
        finally:
            await self.app.cleanup()


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: `applied`, `unchanged`, `invalid`, `not_ready` or `failed`."""

    outcome: str
    problems: tuple[str, ...] = ()


class ReloadingServer:
    """The dispatcher: one `web.Server` for the socket, a current generation, and reloads."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        ready_timeout_seconds: float = READY_TIMEOUT_SECONDS,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.metrics = metrics if metrics is not None else Metrics()
        self.carry_over = CarryOver()
        self._env = env
        self._clock = clock
        self._ready_timeout = ready_timeout_seconds
        self._count = 1
        self.current = Generation(config, self._build(config), self._count)
        self._retiring: dict[asyncio.Task[None], Generation] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._mirrors: list[list[ReadinessCheck]] = []
        self._fingerprint = fingerprint(self.path) if self.path is not None else None

    def _build(self, config: SidecarConfig) -> web.Application:
        return create_app(
            config, clock=self._clock, metrics=self.metrics, carry_over=self.carry_over
        )

    @property
    def app(self) -> web.Application:
        """The current generation's application."""
        return self.current.app

    def mirror_readiness(self, checks: list[ReadinessCheck]) -> None:
        """Keep `checks` (e.g. the internal port's readiness list) equal to the current app's."""
        checks[:] = self.current.readiness
        self._mirrors.append(checks)

    # -- serving -----------------------------------------------------------------------------

    def _make_request(self, *args: Any) -> web.BaseRequest:
        return self.current.make_request(*args)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        generation = self.current
        generation.in_flight += 1  # before any await: a reload cannot close it under us
        try:
            return await generation.request_handler(request)
        finally:
            generation.finished()

    def make_web_server(self, **handler_args: Any) -> web.Server:
        """The server for the listening socket (parser limits and access log in handler_args)."""
        return HeadTimeoutServer(
            self._handle,
            request_factory=self._make_request,
            head_timeout_seconds=self.current.config.server.header_read_timeout_seconds,
            **handler_args,
        )

    async def start(self) -> None:
        await self.current.start()

    async def close(self) -> None:
        """After the socket closed and requests drained: close every generation. Retired ones
        whose requests are over close by themselves; any still waiting are closed now."""
        if self._retiring:
            await asyncio.wait(list(self._retiring), timeout=RETIRE_WAIT_SECONDS)
        for task, generation in list(self._retiring.items()):
            task.cancel()
            await generation.close()
        await self.current.close()

    # -- reloading ---------------------------------------------------------------------------

    def request_reload(self) -> None:
        """Ask the watcher for a reload now (the SIGHUP handler; safe from a signal callback)."""
        self._wake.set()

    async def reload(self, trigger: str = "request") -> ReloadResult:
        """Load, validate, build and swap in the config file's current content (see docstring)."""
        async with self._lock:
            return await self._reload(trigger)

    async def _reload(self, trigger: str) -> ReloadResult:
        if self.path is None:
            logger.warning("reload requested (%s) but sidecar was not started from a file", trigger)
            return ReloadResult("failed", ("no configuration file",))
        self._fingerprint = fingerprint(self.path)
        try:
            config = load_config(self.path, self._env)
        except ConfigError as exc:
            self.metrics.config_reload("invalid")
            count = len(exc.problems)
            logger.error(
                "configuration reload refused (%s): %d problem%s; still serving the previous "
                "configuration: %s",
                trigger,
                count,
                "s" * (count != 1),
                "; ".join(exc.problems),
                extra={"event": "config_reload_refused", "problems": exc.problems},
            )
            return ReloadResult("invalid", tuple(exc.problems))
        old = self.current
        if config == old.config:
            logger.info("configuration unchanged (%s); nothing to reload", trigger)
            return ReloadResult("unchanged")
        restart = restart_only_changes(old.config, config)
        if restart:
            logger.warning(
                "configuration changes that need a restart are ignored until then: %s",
                ", ".join(restart),
                extra={"event": "config_reload_needs_restart", "keys": restart},
            )
            config = config.model_copy(update={"server": _keep(old.config, config)})
        self._count += 1
        generation = Generation(config, self._build(config), self._count)
        try:
            await generation.start()
        except Exception as exc:
            logger.exception("configuration reload failed while starting the new configuration")
            self.metrics.config_reload("failed")
            with contextlib.suppress(Exception):
                await generation.close()
            return ReloadResult("failed", (type(exc).__name__,))
        if not await self._wait_ready(generation) and old.ready():
            failing = [
                r.name + ": " + r.detail for r in run_checks(generation.readiness) if not r.ok
            ]
            logger.error(
                "configuration reload refused (%s): the new configuration is not ready after %gs "
                "(%s); still serving the previous configuration",
                trigger,
                self._ready_timeout,
                "; ".join(failing),
                extra={"event": "config_reload_refused", "problems": failing},
            )
            self.metrics.config_reload("not_ready")
            await generation.close()
            return ReloadResult("not_ready", tuple(failing))
        self._swap(generation)
        if config.logging != old.config.logging:
            configure_logging(config.logging)
        self.metrics.config_reload("applied")
        changed = describe_changes(old.config, config)
        logger.info(
            "configuration reloaded (%s): %s changed; new requests use it",
            trigger,
            ", ".join(changed) or "nothing",
            extra={
                "event": "config_reloaded",
                "changed": changed,
                "generation": self._count,
                "pid": os.getpid(),
            },
        )
        return ReloadResult("applied")

    async def _wait_ready(self, generation: Generation) -> bool:
        deadline = asyncio.get_running_loop().time() + self._ready_timeout
        while not generation.ready():
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(_READY_POLL_SECONDS)
        return True

    def _swap(self, generation: Generation) -> None:
        old = self.current
        self.current = generation  # from here on, new requests go to the new generation
        for checks in self._mirrors:
            checks[:] = generation.readiness
        task = asyncio.get_running_loop().create_task(old.close_when_idle())
        self._retiring[task] = old
        task.add_done_callback(self._retired)

    def _retired(self, task: asyncio.Task[None]) -> None:
        self._retiring.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            logger.error("closing the previous configuration failed", exc_info=task.exception())

    async def watch(self, poll_seconds: float = POLL_SECONDS) -> None:
        """Reload on `request_reload()` and, while `server.watch_config`, when the file changes.

        Runs until cancelled; a failing reload never ends it."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_seconds)
            if self._wake.is_set():
                self._wake.clear()
                await self._guarded_reload("SIGHUP")
            elif self.path is not None and self.current.config.server.watch_config:
                seen = fingerprint(self.path)
                if seen is None or seen == self._fingerprint:
                    continue
                await asyncio.sleep(SETTLE_SECONDS)
                if fingerprint(self.path) == seen:
                    await self._guarded_reload("file changed")

    async def _guarded_reload(self, trigger: str) -> None:
        try:
            await self.reload(trigger)
        except Exception:
            logger.exception("configuration reload failed")
            self.metrics.config_reload("failed")


def _keep(old: SidecarConfig, new: SidecarConfig) -> Any:
    """`new.server` with the restart-only settings of `old`."""
    return new.server.model_copy(update={name: getattr(old.server, name) for name in RESTART_ONLY})


class ReloadingRunner(web.BaseRunner):
    """An aiohttp runner for a `ReloadingServer` (listen with `web.TCPSite(runner, ...)`)."""

    __slots__ = ("_handler_args", "_reloading")

    def __init__(
        self, reloading: ReloadingServer, *, handler_args: Mapping[str, Any], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._reloading = reloading
        self._handler_args = dict(handler_args)

    async def shutdown(self) -> None:
        await self._reloading.current.shutdown()

    async def _make_server(self) -> web.Server:
        await self._reloading.start()
        return self._reloading.make_web_server(**self._handler_args)

    async def _cleanup_server(self) -> None:
        await self._reloading.close()


__all__ = [
    "POLL_SECONDS",
    "Generation",
    "ReloadResult",
    "ReloadingRunner",
    "ReloadingServer",
    "fingerprint",
]
