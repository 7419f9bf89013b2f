"""Sign-in: the auth gate, sidecar's own endpoints, refresh and redirect validation.

`setup(app, config, clock)` is called once by `sidecar.app.create_app` when a provider is
configured. It builds the session codec, cookie policy and store and the refresh coordinator
(`AuthServices`), replaces the app's open gate with the real one, marks sidecar's cookies as its
own (they never reach the backend), registers start/callback/sign_out/userinfo and forward-auth
(`auth`) under `auth.prefix`, adds the provider readiness check, and a cleanup context that starts
the provider directory (discovery and keys, retried in the background) and client with the app
and closes them with it. When configured it also builds the credentials API clients may use
(`sidecar.auth.api_clients`: bearer tokens, htpasswd users) and the identity assertion signer,
whose public keys it serves at `<prefix>/jwks`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial

import aiohttp
from aiohttp import web

from sidecar import keys
from sidecar.assertion import AssertionSigner, add_jwks_route
from sidecar.auth.api_clients import setup_api_clients
from sidecar.auth.forward_auth import add_forward_auth_route
from sidecar.auth.gate import make_gate
from sidecar.auth.handlers import add_routes
from sidecar.auth.services import AuthServices
from sidecar.auth.session_backend import build_session_store, install_session_backend
from sidecar.carry_over import CarryOver
from sidecar.config.model import SidecarConfig
from sidecar.endpoints import Endpoints
from sidecar.observability.health import CheckResult
from sidecar.oidc.client import ProviderClient
from sidecar.oidc.discovery import ProviderDirectory
from sidecar.proxy.headers import HeaderPlan, build_header_plan
from sidecar.session.codec import SessionCodec
from sidecar.session.cookies import CookiePolicy, RequestCookies, read_request_cookies

__all__ = ["build_services", "setup"]


def build_services(
    config: SidecarConfig,
    clock: Callable[[], float],
    *,
    header_plan: HeaderPlan | None = None,
    carry_over: CarryOver | None = None,
) -> AuthServices:
    """Everything sign-in needs that can be built before the app runs."""
    if config.provider is None or config.session is None:
        raise ValueError("sign-in needs the provider and session sections")
    codec = SessionCodec([secret.get_secret_value() for secret in config.session.secrets])
    policy = CookiePolicy.from_config(config)
    return AuthServices(
        config=config,
        provider=config.provider,
        session=config.session,
        clock=clock,
        codec=codec,
        policy=policy,
        store=build_session_store(config, codec, policy, carry_over=carry_over),
        endpoints=Endpoints(config.auth.prefix),
        header_plan=header_plan or build_header_plan(config),
    )


def _provider_context(
    services: AuthServices,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def provider(app: web.Application) -> AsyncIterator[None]:
        http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        metrics = services.metrics
        directory = ProviderDirectory(
            services.provider,
            http,
            clock=services.clock,
            on_fetch_error=metrics.provider_fetch_error if metrics is not None else None,
        )
        services.directory = directory
        services.client = ProviderClient(services.provider, directory, http, clock=services.clock)
        await directory.start()
        try:
            yield
        finally:
            await directory.close()
            services.client = None
            services.directory = None
            await http.close()

    return provider


def _readiness(services: AuthServices) -> CheckResult:
    directory = services.directory
    if directory is None:
        return CheckResult("provider", False, "not started")
    return CheckResult("provider", directory.ready, directory.status()["provider"])


def setup(app: web.Application, config: SidecarConfig, clock: Callable[[], float]) -> None:
    """Wire sign-in into `app` (see the module docstring)."""
    services = build_services(
        config, clock, header_plan=app.get(keys.HEADER_PLAN), carry_over=app.get(keys.CARRY_OVER)
    )
    app[keys.AUTH_SERVICES] = services
    services.api_clients = setup_api_clients(app, services)
    if config.assertion_anywhere:
        services.assertions = AssertionSigner.from_config(config.identity_assertion, clock=clock)
        add_jwks_route(app, services.assertions, services.endpoints.jwks)
    services.metrics = app.get(keys.METRICS)
    app[keys.GATE] = make_gate(services)
    policy = services.policy

    def read_cookies(cookie_headers: Sequence[str]) -> RequestCookies:
        return read_request_cookies(policy, cookie_headers)

    app[keys.COOKIE_READER] = read_cookies
    app[keys.READINESS].append(partial(_readiness, services))
    app.cleanup_ctx.append(_provider_context(services))
    add_routes(app, services)
    install_session_backend(app, services)
    add_forward_auth_route(app, services)
