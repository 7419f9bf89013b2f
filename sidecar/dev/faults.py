"""Misbehaviour knobs and request counters of the development OpenID provider.

`Faults` is a plain mutable object that tests flip between requests to make `DevProvider` do what
a real provider will not (bad signatures, wrong claims, failing endpoints); every knob is off by
default, so an untouched provider is honest. `Counters` records how often each endpoint was hit,
so tests can assert "one refresh, not three" without looking inside sidecar.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, fields


@dataclass
class Faults:
    """What the provider should get wrong on the next requests (all off = honest provider)."""

    # ID token signature and header
    sign_with_wrong_key: bool = False  # signed by a key not in the JWKS, under the current kid
    alg_none: bool = False  # header alg "none", empty signature
    hs256_with_public_key: bool = False  # HS256 keyed with the RSA public key PEM
    unknown_kid: bool = False  # signed by an unpublished key with its own kid
    no_kid: bool = False  # correctly signed, no kid in the header
    publish_extra_key: bool = False  # the JWKS also lists a second (unused) signing key
    # ID token claims
    wrong_issuer: bool = False
    wrong_audience: bool = False
    extra_audience: bool = False  # aud is [client, other] and azp is absent
    wrong_azp: bool = False
    wrong_nonce: bool = False
    missing_nonce: bool = False
    expired: bool = False  # exp an hour before now
    missing_sub: bool = False  # no sub claim
    missing_iat: bool = False  # no iat claim
    missing_exp: bool = False  # no exp claim
    missing_audience: bool = False  # no aud claim (azp kept)
    issued_in_future: bool = False  # iat an hour after now
    # other endpoints
    userinfo_sub_mismatch: bool = False
    authorize_error: str | None = None  # e.g. "access_denied": redirect back with error=
    callback_wrong_issuer: bool = False  # the `iss` authorization response parameter (RFC 9207)
    token_delay_seconds: float = 0.0
    token_hold: asyncio.Event | None = None  # token endpoint waits until the event is set
    token_status_500: bool = False
    token_drop_connection: bool = False
    refresh_invalid_grant: bool = False
    discovery_wrong_issuer: bool = False
    down: bool = False  # every endpoint answers 503

    def reset(self) -> None:
        """Turn every knob off again."""
        for field in fields(self):
            setattr(self, field.name, field.default)


@dataclass
class Counters:
    """How many requests each endpoint served (including failed and faulted ones)."""

    discovery: int = 0
    jwks: int = 0
    authorize: int = 0
    logins: int = 0  # completed form sign-ins (POST /authorize) and auto logins
    token_requests: int = 0
    code_exchanges: int = 0  # successful authorization_code grants
    refreshes: int = 0  # successful refresh_token grants
    userinfo: int = 0
    end_session: int = 0
    introspect: int = 0
    api_calls: int = 0  # a shape's API answers (GitHub REST API, Microsoft Graph)
