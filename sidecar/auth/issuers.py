"""Signing keys of the extra trusted issuers whose JWT access tokens sidecar accepts.

A trusted issuer (a CI system, a second provider, a Kubernetes service-account issuer) often has
no authorization or token endpoint, so the sign-in `ProviderDirectory` does not fit; `IssuerKeys`
needs only its JWKS: from `jwks_uri`, or from `<issuer>/.well-known/openid-configuration` (whose
`issuer` must equal the configured one exactly). It reuses `sidecar.oidc.discovery`'s fetching,
size limit and JWKS parsing. Keys load when the app starts (in the background) or on the first
token; a failed load is retried at most every `RETRY_SECONDS` (requests meanwhile get 503, never
a storm of fetches); an unknown `kid` re-fetches the JWKS at most once per
`JWKS_REFETCH_INTERVAL_SECONDS`, as for the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from joserfc.jwk import KeySet

from sidecar.config.model import TrustedIssuerConfig, is_loopback_url
from sidecar.errors import ProviderUnavailableError
from sidecar.oidc.discovery import (
    JWKS_REFETCH_INTERVAL_SECONDS,
    WELL_KNOWN_PATH,
    ProviderResponseError,
    describe_http_failure,
    knows_kid,
    parse_jwks,
    read_json,
)

log = logging.getLogger(__name__)

RETRY_SECONDS = 10.0
HTTP_TIMEOUT_SECONDS = 10.0


class IssuerKeys:
    """The JWKS of one trusted issuer, fetched lazily and cached for the app's lifetime."""

    def __init__(
        self,
        config: TrustedIssuerConfig,
        http: aiohttp.ClientSession,
        *,
        clock: Callable[[], float],
        timeout_seconds: float = HTTP_TIMEOUT_SECONDS,
    ) -> None:
        self.config = config
        self._http = http
        self._clock = clock
        self._timeout_seconds = timeout_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._jwks_uri = config.jwks_uri
        self._keys: KeySet | None = None
        self._problem = "not loaded yet"
        self._last_attempt_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def issuer(self) -> str:
        return self.config.issuer

    async def key_set(self, kid: str | None) -> KeySet:
        """The issuer's keys, fetched (again) when missing or when `kid` is unknown; raises
        `ProviderUnavailableError` when they cannot be had."""
        keys = self._keys
        if keys is not None and knows_kid(keys, kid):
            return keys
        async with self._lock:
            keys = self._keys
            if keys is not None and knows_kid(keys, kid):
                return keys
            now = self._clock()
            last = self._last_attempt_at
            interval = RETRY_SECONDS if keys is None else JWKS_REFETCH_INTERVAL_SECONDS
            if last is None or now - last >= interval:
                self._last_attempt_at = now
                await self._load()
            if self._keys is None:
                raise ProviderUnavailableError(
                    reason=f"keys of trusted issuer {self.issuer} not loaded: {self._problem}"
                )
            return self._keys

    async def _load(self) -> None:
        try:
            if self._jwks_uri is None:
                self._jwks_uri = await self._discover_jwks_uri()
            self._keys = parse_jwks(await self._get_json(self._jwks_uri))
            self._problem = "ready"
        except (aiohttp.ClientError, TimeoutError, ProviderResponseError) as exc:
            self._problem = describe_http_failure(exc, self._timeout_seconds)
            log.warning("trusted issuer %s: keys not loaded: %s", self.issuer, self._problem)

    async def _discover_jwks_uri(self) -> str:
        doc = await self._get_json(self.issuer.rstrip("/") + WELL_KNOWN_PATH)
        if not isinstance(doc, dict):
            raise ProviderResponseError("discovery document is not a JSON object")
        if doc.get("issuer") != self.issuer:
            raise ProviderResponseError(f"issuer mismatch: got {str(doc.get('issuer'))[:100]}")
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https:", "http:")):
            raise ProviderResponseError("discovery document lacks jwks_uri")
        insecure = jwks_uri.startswith("http:") and not is_loopback_url(jwks_uri)
        if insecure and not self.config.insecure_allow_http:
            raise ProviderResponseError(f"jwks_uri {jwks_uri} is plain http")
        return jwks_uri

    async def _get_json(self, url: str) -> Any:
        async with self._http.get(
            url, timeout=self._timeout, headers={"Accept": "application/json"}
        ) as response:
            if response.status != 200:
                raise ProviderResponseError(f"HTTP {response.status} from {url}")
            return await read_json(response)

    async def prefetch(self) -> None:
        """Try to load the keys once now (at start-up), so the first token is not kept waiting."""
        with contextlib.suppress(ProviderUnavailableError):  # logged; the next token tries again
            await self.key_set(None)
