"""`sidecar demo` and `sidecar dev-provider`: sign-in on one machine with nothing else installed.

The demo runs three servers in one process, all on loopback: the development OpenID provider
(`sidecar.dev.provider`, NOT FOR PRODUCTION: it signs in anyone), the demo backend that shows the
headers it receives (`sidecar.dev.backend`), and sidecar itself in front of the backend, configured
exactly as a user's YAML file would configure it (a `SidecarConfig`, validated the same way). The
client registration at the provider is made once sidecar's port is known, so `--port 0` works.
`dev-provider` runs the provider alone, for people who develop apps behind sidecar.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from sidecar import keys
from sidecar.app import create_app
from sidecar.config.model import LoggingConfig, SidecarConfig
from sidecar.dev.backend import create_backend_app
from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient
from sidecar.endpoints import Endpoints
from sidecar.observability.logging import configure_logging
from sidecar.session.codec import generate_secret

log = logging.getLogger("sidecar.demo")

DEMO_CLIENT_ID = "sidecar-demo"


@dataclass(frozen=True)
class DemoAddresses:
    """Where the demo's three servers listen (origins, no trailing slash)."""

    sidecar: str
    provider: str
    backend: str


def build_demo_config(
    *, listen: str, issuer: str, client_secret: str, backend_url: str
) -> SidecarConfig:
    """The configuration a user would write for this setup, validated like a YAML file."""
    return SidecarConfig.model_validate(
        {
            "version": 1,
            "server": {"listen": listen},
            "upstream": backend_url,
            "provider": {
                "issuer": issuer,
                "client_id": DEMO_CLIENT_ID,
                "client_secret": client_secret,
            },
            "session": {"secret": generate_secret()},
            "logging": {"format": "text", "level": "info"},
        }
    )


def _origin(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, int(runner.addresses[0][1])


async def run_demo(
    *,
    host: str = "127.0.0.1",
    port: int = 4180,
    provider_port: int = 0,
    started: Callable[[DemoAddresses], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run provider, backend and sidecar until `stop` is set (or SIGINT/SIGTERM)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    provider = DevProvider()
    runners: list[web.AppRunner] = []
    try:
        issuer = await provider.start(host, provider_port)
        backend_runner, backend_port = await _serve(create_backend_app(), host, 0)
        runners.append(backend_runner)
        client_secret = secrets.token_urlsafe(32)
        config = build_demo_config(
            listen=f"{host}:{port}",
            issuer=issuer,
            client_secret=client_secret,
            backend_url=_origin(host, backend_port),
        )
        app = create_app(config)
        sidecar_runner, sidecar_port = await _serve(app, host, port)
        runners.append(sidecar_runner)
        async with asyncio.timeout(30):  # the provider is local: discovery takes milliseconds
            await app[keys.AUTH_SERVICES].require_directory().wait_ready()
        origin = _origin(host, sidecar_port)
        endpoints = Endpoints(config.auth.prefix)
        provider.add_client(
            DevClient(
                client_id=DEMO_CLIENT_ID,
                client_secret=client_secret,
                redirect_uris=(origin + endpoints.callback,),
                post_logout_redirect_uris=(origin + "/", origin + config.auth.post_logout_redirect),
            )
        )
        addresses = DemoAddresses(
            sidecar=origin, provider=issuer, backend=_origin(host, backend_port)
        )
        if started is not None:
            started(addresses)
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        for runner in reversed(runners):
            await runner.cleanup()
        await provider.stop()


def print_banner(addresses: DemoAddresses) -> None:
    print(
        "\nsidecar demo is running. NOT FOR PRODUCTION: its development provider signs in anyone.\n"
        f"  open this:  {addresses.sidecar}/\n"
        f"  provider:   {addresses.provider}  (development OpenID provider: any name, no password)"
        "\n"
        f"  backend:    {addresses.backend}  (shows the headers sidecar sends it)\n"
        "Press Ctrl+C to stop.\n",
        flush=True,
    )


def demo_main(*, host: str, port: int, provider_port: int) -> int:
    configure_logging(LoggingConfig(format="text", level="info"))
    asyncio.run(run_demo(host=host, port=port, provider_port=provider_port, started=print_banner))
    return 0


async def run_dev_provider(
    *,
    host: str,
    port: int,
    client_id: str,
    client_secret: str,
    redirect_uris: Sequence[str],
    post_logout_redirect_uris: Sequence[str],
    started: Callable[[str], None] | None = None,
) -> None:
    """Run the development provider alone, with one registered client, until signalled."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    provider = DevProvider(
        clients=[
            DevClient(
                client_id=client_id,
                client_secret=client_secret,
                redirect_uris=tuple(redirect_uris),
                post_logout_redirect_uris=tuple(post_logout_redirect_uris),
            )
        ]
    )
    try:
        issuer = await provider.start(host, port)
        if started is not None:
            started(issuer)
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await provider.stop()
