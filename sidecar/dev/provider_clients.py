"""Registered clients of the development OpenID provider and how they authenticate.

`DevClient` is one relying party (redirect URIs, post-logout URIs, token endpoint authentication
method). `authenticate_client` checks a token/introspection request's client authentication the
way a strict provider does (RFC 6749 2.3.1, OpenID Connect Core 9): only the client's registered
method is accepted, secrets are compared in constant time, `private_key_jwt` assertions are
verified with the client's public keys (iss, sub, aud, exp, one-time jti). Pure: no aiohttp.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus

from joserfc import jwk, jwt
from joserfc.errors import JoseError

AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS256", "PS256", "ES256")


@dataclass(frozen=True)
class DevClient:
    """One relying party registered at the development provider."""

    client_id: str
    client_secret: str | None = None
    redirect_uris: Sequence[str] = ()
    post_logout_redirect_uris: Sequence[str] = ()
    auth_method: AuthMethod = "client_secret_basic"
    jwks: Mapping[str, Any] | None = None  # public keys for private_key_jwt
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # the secret never shows up in test output or logs
        return f"DevClient(client_id={self.client_id!r}, auth_method={self.auth_method!r})"


class ClientAuthError(Exception):
    """Client authentication failed (`invalid_client`); the message is safe to show."""

    def __init__(self, description: str, *, basic_challenge: bool = False) -> None:
        super().__init__(description)
        self.description = description
        self.basic_challenge = basic_challenge


def authenticate_client(
    *,
    authorization: str | None,
    form: Mapping[str, str],
    clients: Mapping[str, DevClient],
    audiences: Sequence[str],
    now: float,
    seen_jtis: MutableMapping[str, float],
) -> DevClient:
    """The client that authenticated this request, or `ClientAuthError`.

    `audiences` are the values a `private_key_jwt` assertion may name in `aud` (the endpoint URL
    and the issuer); `seen_jtis` remembers assertion ids until they expire, to refuse replays.
    """
    if authorization is not None and authorization[:6].lower() == "basic ":
        client_id, secret = _parse_basic(authorization[6:])
        client = _known(clients, client_id, basic=True)
        _require_method(client, "client_secret_basic", basic=True)
        _check_secret(client, secret, basic=True)
        return client
    if "client_assertion" in form or "client_assertion_type" in form:
        return _check_assertion(form, clients, audiences, now, seen_jtis)
    client = _known(clients, form.get("client_id", ""), basic=False)
    if "client_secret" in form:
        _require_method(client, "client_secret_post", basic=False)
        _check_secret(client, form["client_secret"], basic=False)
        return client
    _require_method(client, "none", basic=client.auth_method == "client_secret_basic")
    return client


def _parse_basic(encoded: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ClientAuthError("malformed Basic credentials", basic_challenge=True) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise ClientAuthError("malformed Basic credentials", basic_challenge=True)
    # RFC 6749 2.3.1: both parts are form-urlencoded before base64.
    return unquote_plus(client_id), unquote_plus(secret)


def _known(clients: Mapping[str, DevClient], client_id: str, *, basic: bool) -> DevClient:
    client = clients.get(client_id)
    if client is None:
        raise ClientAuthError("unknown client", basic_challenge=basic)
    return client


def _require_method(client: DevClient, used: AuthMethod, *, basic: bool) -> None:
    if client.auth_method != used:
        raise ClientAuthError(
            f"client is registered for {client.auth_method}, not {used}", basic_challenge=basic
        )


def _check_secret(client: DevClient, secret: str, *, basic: bool) -> None:
    expected = (client.client_secret or "").encode("utf-8")
    if not expected or not hmac.compare_digest(expected, secret.encode("utf-8")):
        raise ClientAuthError("wrong client secret", basic_challenge=basic)


def _check_assertion(
    form: Mapping[str, str],
    clients: Mapping[str, DevClient],
    audiences: Sequence[str],
    now: float,
    seen_jtis: MutableMapping[str, float],
) -> DevClient:
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise ClientAuthError("unsupported client_assertion_type")
    assertion = form.get("client_assertion", "")
    issuer = _unverified_issuer(assertion)
    client = _known(clients, issuer, basic=False)
    if "client_id" in form and form["client_id"] != client.client_id:
        raise ClientAuthError("client_id does not match the assertion")
    _require_method(client, "private_key_jwt", basic=False)
    if not client.jwks:
        raise ClientAuthError("client has no registered keys")
    try:
        keys = jwk.KeySet.import_key_set(dict(client.jwks))  # type: ignore[arg-type]
        token = jwt.decode(assertion, keys, algorithms=list(ASSERTION_ALGORITHMS))
    except (JoseError, ValueError) as exc:
        raise ClientAuthError("client assertion signature is not valid") from exc
    claims = token.claims
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise ClientAuthError("client assertion iss and sub must be the client_id")
    aud = claims.get("aud")
    aud_values = aud if isinstance(aud, list) else [aud]
    if not any(value in audiences for value in aud_values):
        raise ClientAuthError("client assertion aud is not this provider")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= now:
        raise ClientAuthError("client assertion expired")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise ClientAuthError("client assertion needs a jti")
    for old, expires in list(seen_jtis.items()):
        if expires <= now:
            del seen_jtis[old]
    if jti in seen_jtis:
        raise ClientAuthError("client assertion jti was already used")
    seen_jtis[jti] = float(exp)
    return client


def _unverified_issuer(assertion: str) -> str:
    """The `iss` of an assertion before its signature is checked (only to pick the client)."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise ClientAuthError("malformed client assertion")
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError) as exc:
        raise ClientAuthError("malformed client assertion") from exc
    iss = claims.get("iss") if isinstance(claims, dict) else None
    if not isinstance(iss, str):
        raise ClientAuthError("client assertion has no iss")
    return iss
