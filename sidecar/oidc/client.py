"""Calls to the provider's token, userinfo and introspection endpoints, with client authentication.

`ProviderClient` redeems authorization codes, refreshes tokens and reads userinfo. It
authenticates as configured: `client_secret_basic` (RFC 6749 2.3.1, form-urlencoded id and secret
in HTTP Basic), `client_secret_post`, or `private_key_jwt` (RFC 7523: an assertion signed with
joserfc). Failures are typed: a refused refresh token is `RefreshRejectedError`, anything that
looks like an outage is `ProviderUnavailableError`. Response bodies, tokens, codes and secrets are
never logged; only status codes and the provider's short `error` code are.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from sidecar.config.model import ProviderConfig
from sidecar.errors import (
    ConfigError,
    LoginError,
    ProviderUnavailableError,
    RefreshRejectedError,
)
from sidecar.oidc.discovery import (
    ProviderDirectory,
    ProviderResponseError,
    describe_http_failure,
    read_json,
)
from sidecar.oidc.tokens import TokenResponse, TokenResponseError, parse_token_response

__all__ = ["ProviderClient", "TokenResponse"]

log = logging.getLogger(__name__)

ASSERTION_LIFETIME_SECONDS = 60
MAX_TOKEN_RESPONSE_BYTES = 256 * 1024
_SAFE_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# bad_refresh_token: GitHub's name for invalid_grant.
_REVOKED_ERRORS = frozenset({"invalid_grant", "invalid_token", "bad_refresh_token"})
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def load_assertion_key(pem: str) -> tuple[RSAKey | ECKey, str]:
    """The private_key_jwt signing key and its algorithm (RS256, or ES256/384/512 by curve)."""
    try:
        private = load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(["provider.private_key: not an unencrypted PEM private key"]) from exc
    if isinstance(private, rsa.RSAPrivateKey):
        return RSAKey.import_key(private), "RS256"
    if isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name in _EC_ALGORITHMS:
        return ECKey.import_key(private), _EC_ALGORITHMS[private.curve.name]
    raise ConfigError(["provider.private_key: use an RSA or EC (P-256/384/521) key"])


def _error_code(doc: Any) -> str:
    """The provider's OAuth `error` code if it is a short safe token; never the description."""
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, str) and _SAFE_ERROR_CODE.fullmatch(error):
        return error
    return "unknown"


@dataclass(frozen=True)
class ApiAnswer:
    """A provider API's answer (GitHub REST API, Microsoft Graph): status, JSON, Link relations."""

    status: int
    doc: Any
    links: Mapping[str, str] = field(default_factory=dict)  # rel -> URL (pagination)


class ProviderClient:
    """Token endpoint and userinfo calls for one configured provider."""

    def __init__(
        self,
        config: ProviderConfig,
        directory: ProviderDirectory,
        http: aiohttp.ClientSession,
        *,
        clock: Callable[[], float],
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._config = config
        self._directory = directory
        self._http = http
        self._clock = clock
        self._token_bytes = token_bytes
        self._timeout = aiohttp.ClientTimeout(total=config.http_timeout_seconds)
        self._assertion_key: tuple[RSAKey | ECKey, str] | None = None
        if config.token_endpoint_auth_method == "private_key_jwt":  # noqa: S105
            assert config.private_key is not None  # the config model requires it
            self._assertion_key = load_assertion_key(config.private_key.get_secret_value())

    async def exchange_code(
        self, code: str, code_verifier: str, redirect_uri: str
    ) -> TokenResponse:
        """Redeem an authorization code (with its PKCE verifier). A refusal is a `LoginError`."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        status, doc = await self._token_request(form, what="code exchange")
        if status != 200:
            raise LoginError(
                code="token_exchange_failed",
                reason=f"token endpoint refused the code: HTTP {status} error={_error_code(doc)}",
            )
        tokens = self._parse(doc, what="code exchange")
        if self._config.is_oidc and tokens.id_token is None:
            raise LoginError(code="id_token_missing", reason="token response without id_token")
        return tokens

    async def refresh(self, refresh_token: str) -> TokenResponse:
        """Use a refresh token. Revoked: `RefreshRejectedError`; down: `ProviderUnavailableError`.

        Other refusals (invalid_client, ...) count as an outage: the session itself is not at fault.
        """
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        status, doc = await self._token_request(form, what="refresh")
        if status != 200:
            error = _error_code(doc)
            reason = f"refresh refused: HTTP {status} error={error}"
            if status in (400, 401) and error in _REVOKED_ERRORS:
                raise RefreshRejectedError(reason=reason)
            raise ProviderUnavailableError(reason=reason)
        return self._parse(doc, what="refresh")

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        """The userinfo endpoint's claims (JSON object) for this access token."""
        endpoint = self._directory.metadata().userinfo_endpoint
        if endpoint is None:
            raise ProviderUnavailableError(reason="the provider has no userinfo endpoint")
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        try:
            async with self._http.get(endpoint, headers=headers, timeout=self._timeout) as response:
                status = response.status
                doc = await read_json(response, limit_bytes=MAX_TOKEN_RESPONSE_BYTES)
        except (aiohttp.ClientError, TimeoutError, ProviderResponseError) as exc:
            detail = describe_http_failure(exc, self._config.http_timeout_seconds)
            raise ProviderUnavailableError(reason=f"userinfo failed: {detail}") from exc
        if status >= 500:
            raise ProviderUnavailableError(reason=f"userinfo failed: HTTP {status}")
        if status != 200 or not isinstance(doc, dict):
            raise LoginError(code="userinfo_failed", reason=f"userinfo refused: HTTP {status}")
        return doc

    async def introspect(self, token: str, *, endpoint: str) -> dict[str, Any]:
        """RFC 7662: the provider's answer about `token` (a JSON object; `active` says whether it
        is valid), asked with the same client authentication as the token endpoint. Refusals,
        outages and unusable answers raise `ProviderUnavailableError`: the token is not at fault.
        """
        form, headers = self._authenticate(
            {"token": token, "token_type_hint": "access_token"}, endpoint
        )
        try:
            async with self._http.post(
                endpoint, data=form, headers=headers, timeout=self._timeout
            ) as response:
                status = response.status
                doc = await read_json(response, limit_bytes=MAX_TOKEN_RESPONSE_BYTES)
        except (aiohttp.ClientError, TimeoutError, ProviderResponseError) as exc:
            detail = describe_http_failure(exc, self._config.http_timeout_seconds)
            log.warning("introspection failed: %s", detail)
            raise ProviderUnavailableError(reason=f"introspection failed: {detail}") from exc
        if status != 200 or not isinstance(doc, dict):
            log.warning("introspection refused: HTTP %s error=%s", status, _error_code(doc))
            raise ProviderUnavailableError(reason=f"introspection failed: HTTP {status}")
        return doc

    async def call_api(
        self,
        url: str,
        access_token: str,
        *,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiAnswer:
        """Call a provider API with the user's access token: GET, or POST when `json_body` is
        given. Network failures and 5xx are `ProviderUnavailableError`; other statuses return."""
        sent = {"Accept": "application/json", **(headers or {})}
        sent["Authorization"] = f"Bearer {access_token}"
        method = "GET" if json_body is None else "POST"
        try:
            async with self._http.request(
                method, url, json=json_body, headers=sent, timeout=self._timeout
            ) as response:
                status = response.status
                links = {
                    str(rel): str(link["url"])
                    for rel, link in response.links.items()
                    if isinstance(rel, str)
                }
                try:
                    doc = await read_json(response, limit_bytes=MAX_TOKEN_RESPONSE_BYTES)
                except ProviderResponseError:
                    if status == 200:
                        raise
                    doc = None
        except (aiohttp.ClientError, TimeoutError, ProviderResponseError) as exc:
            detail = describe_http_failure(exc, self._config.http_timeout_seconds)
            raise ProviderUnavailableError(reason=f"provider API call failed: {detail}") from exc
        if status >= 500:
            raise ProviderUnavailableError(reason=f"provider API call failed: HTTP {status}")
        return ApiAnswer(status, doc, links)

    def _parse(self, doc: Any, *, what: str) -> TokenResponse:
        try:
            return parse_token_response(doc)
        except TokenResponseError as exc:
            raise ProviderUnavailableError(reason=f"{what}: {exc}") from exc

    def _client_assertion(self, audience: str) -> str:
        assert self._assertion_key is not None
        key, alg = self._assertion_key
        now = int(self._clock())
        claims = {
            "iss": self._config.client_id,
            "sub": self._config.client_id,
            "aud": audience,
            "jti": base64.urlsafe_b64encode(self._token_bytes(32)).rstrip(b"=").decode("ascii"),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
        }
        header: dict[str, Any] = {"alg": alg}
        if self._config.private_key_id:
            header["kid"] = self._config.private_key_id
        return jwt.encode(header, claims, key, algorithms=[alg])

    def _authenticate(
        self, form: dict[str, str], token_endpoint: str
    ) -> tuple[dict[str, str], Mapping[str, str]]:
        """The form and headers with client authentication added, as configured."""
        config = self._config
        headers = {"Accept": "application/json"}
        method = config.token_endpoint_auth_method
        if method == "private_key_jwt":
            form = {
                **form,
                "client_id": config.client_id,
                "client_assertion_type": _JWT_BEARER,
                "client_assertion": self._client_assertion(token_endpoint),
            }
            return form, headers
        assert config.client_secret is not None  # the config model requires it
        secret = config.client_secret.get_secret_value()
        if method == "client_secret_post":
            return {**form, "client_id": config.client_id, "client_secret": secret}, headers
        pair = f"{quote_plus(config.client_id)}:{quote_plus(secret)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return form, headers

    async def _token_request(self, form: dict[str, str], *, what: str) -> tuple[int, Any]:
        """POST to the token endpoint; returns (status, JSON body or None). Outages raise."""
        token_endpoint = self._directory.metadata().token_endpoint
        form, headers = self._authenticate(form, token_endpoint)
        try:
            async with self._http.post(
                token_endpoint, data=form, headers=headers, timeout=self._timeout
            ) as response:
                status = response.status
                try:
                    doc = await read_json(response, limit_bytes=MAX_TOKEN_RESPONSE_BYTES)
                except ProviderResponseError:
                    doc = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = describe_http_failure(exc, self._config.http_timeout_seconds)
            log.warning("token endpoint %s failed: %s", what, detail)
            raise ProviderUnavailableError(reason=f"{what} failed: {detail}") from exc
        if status == 200 and isinstance(doc, dict) and "error" in doc and "access_token" not in doc:
            status = 400  # GitHub answers errors with 200 and an `error` field
        if status >= 500 or (status == 200 and doc is None):
            log.warning("token endpoint %s failed: HTTP %s", what, status)
            raise ProviderUnavailableError(reason=f"{what} failed: HTTP {status}")
        if status != 200:
            log.info("token endpoint refused %s: HTTP %s error=%s", what, status, _error_code(doc))
        return status, doc
