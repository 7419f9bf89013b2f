"""The sign-in services: everything the gate and the auth handlers share, built once per app.

`AuthServices` holds the configuration, the cookie codec, policy and session store, the refresh
coordinator and — once the app has started (they need the running loop) — the provider directory
and client. It also owns the two provider-facing operations both sides need: validating an ID
token (re-fetching the JWKS once when the `kid` is unknown, so key rotation needs no restart) and
refreshing a session's tokens. `sidecar.auth.setup` builds it; nothing else does.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sidecar.auth.origin import build_origin
from sidecar.auth.refresh import RefreshCoordinator
from sidecar.config.model import ProviderConfig, SessionConfig, SidecarConfig
from sidecar.endpoints import Endpoints
from sidecar.errors import (
    BadRequestError,
    IdTokenError,
    ProviderUnavailableError,
    RefreshRejectedError,
)
from sidecar.observability.metrics import Metrics
from sidecar.oidc.client import ProviderClient
from sidecar.oidc.discovery import ProviderDirectory
from sidecar.oidc.entra import expected_issuer, read_unverified_claims
from sidecar.oidc.tokens import (
    access_token_expiry,
    token_kid,
    validate_id_token,
)
from sidecar.proxy.headers import HeaderPlan
from sidecar.session.codec import SessionCodec
from sidecar.session.cookies import CookiePolicy
from sidecar.session.model import Session, Tokens
from sidecar.session.store import SessionStore

if TYPE_CHECKING:
    from sidecar.assertion import AssertionSigner
    from sidecar.auth.api_clients import ApiClients


@dataclass
class AuthServices:
    """The long-lived objects of sign-in. `directory` and `client` exist while the app runs."""

    config: SidecarConfig
    provider: ProviderConfig
    session: SessionConfig
    clock: Callable[[], float]
    codec: SessionCodec
    policy: CookiePolicy
    store: SessionStore
    endpoints: Endpoints
    header_plan: HeaderPlan
    token_bytes: Callable[[int], bytes] = secrets.token_bytes
    directory: ProviderDirectory | None = None
    client: ProviderClient | None = None
    metrics: Metrics | None = None
    api_clients: ApiClients | None = None  # bearer and htpasswd (sidecar.auth.api_clients)
    assertions: AssertionSigner | None = None  # the signed identity assertion (sidecar.assertion)
    coordinator: RefreshCoordinator = field(init=False)

    def __post_init__(self) -> None:
        self.coordinator = RefreshCoordinator(
            self.refresh_session,
            clock=self.clock,
            grace_seconds=self.session.refresh_grace_seconds,
        )

    # -- the running provider ------------------------------------------------------------------

    def require_directory(self) -> ProviderDirectory:
        if self.directory is None:
            raise ProviderUnavailableError(reason="provider directory not started")
        return self.directory

    def require_client(self) -> ProviderClient:
        if self.client is None:
            raise ProviderUnavailableError(reason="provider client not started")
        return self.client

    # -- where we are -------------------------------------------------------------------------

    def origin(self, request: web.Request) -> str:
        """Sidecar's public origin for this request (see `sidecar.auth.origin`)."""
        origin = build_origin(
            public_url=self.config.server.public_url,
            scheme=request.scheme,
            host=request.host,
            forwarded_proto=request.headers.get("X-Forwarded-Proto"),
            forwarded_host=request.headers.get("X-Forwarded-Host"),
            peer_trusted=self.header_plan.is_trusted(request.remote),
        )
        if origin is None:
            raise BadRequestError(reason="request Host is not a usable host[:port]")
        return origin

    def redirect_uri(self, origin: str) -> str:
        return origin + self.endpoints.callback

    # -- provider operations ------------------------------------------------------------------

    async def validate_id_token(
        self, token: str, *, nonce: str | None, expected_sub: str | None = None
    ) -> dict[str, Any]:
        """Validate an ID token; an unknown `kid` re-fetches the provider's keys once first."""
        directory = self.require_directory()
        metadata = directory.metadata()
        issuer = metadata.issuer or self.provider.issuer or ""
        if metadata.issuer_template is not None:  # Entra multi-tenant: iss names the tenant
            claims = read_unverified_claims(token)
            issuer = expected_issuer(metadata.issuer_template, claims, self.provider.entra)
        kid = token_kid(token)
        keys = await directory.key_set(kid)
        return validate_id_token(
            token,
            keys=keys,
            issuer=issuer,
            client_id=self.provider.client_id,
            nonce=nonce,
            now=self.clock(),
            leeway=self.provider.clock_skew_seconds,
            algorithms=self.provider.id_token_algorithms,
            expected_sub=expected_sub,
        )

    async def refresh_session(self, session: Session) -> Session:
        """`session` with fresh tokens, else RefreshRejectedError / ProviderUnavailableError.
        Each call is one refresh at the provider, counted in the metrics by outcome."""
        outcome = "failed"
        try:
            refreshed = await self._refresh_tokens(session)
            outcome = "refreshed"
            return refreshed
        except RefreshRejectedError:
            outcome = "rejected"
            raise
        except ProviderUnavailableError:
            outcome = "provider_unavailable"
            raise
        finally:
            if self.metrics is not None:
                self.metrics.refresh(outcome)

    async def _refresh_tokens(self, session: Session) -> Session:
        refresh_token = session.tokens.refresh_token
        if not refresh_token:
            raise RefreshRejectedError(reason="session has no refresh token")
        response = await self.require_client().refresh(refresh_token)
        now = self.clock()
        id_token = session.tokens.id_token
        if response.id_token:
            try:
                await self.validate_id_token(
                    response.id_token, nonce=None, expected_sub=session.identity.sub
                )
            except IdTokenError as exc:
                raise RefreshRejectedError(
                    reason=f"refreshed ID token invalid: {exc.reason}"
                ) from exc
            id_token = response.id_token
        tokens = Tokens(
            access_token=response.access_token,
            refresh_token=response.refresh_token or refresh_token,
            id_token=id_token,
            expires_at=access_token_expiry(response, now),
        )
        return replace(session, tokens=tokens)
