"""The authorization code flow as plain values (sans-I/O): attempts, URLs, callback parsing.

A sign-in attempt gets a fresh `state`, `nonce` and PKCE verifier (RFC 7636, `S256` always);
`build_authorization_url` turns it into the provider redirect, `parse_callback` reads the provider's
answer (RFC 6749 4.1.2, RFC 9207 `iss`) into a `Callback` or a `LoginError`, and
`build_end_session_url` builds RP-initiated logout. Nothing here does I/O, reads a clock or draws
randomness itself: `now` and `token_bytes` are parameters.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit, urlunsplit

from sidecar.config.model import ProviderConfig
from sidecar.errors import LoginError
from sidecar.oidc.discovery import ProviderMetadata
from sidecar.session.attempts import LoginAttempt

# Parameters sidecar sets itself; `extra_authorize_params` can never replace them.
PROTECTED_AUTHORIZE_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "response_mode",
        "request",
        "request_uri",
    }
)

_STATE_BYTES = 32
_NONCE_BYTES = 32
_VERIFIER_BYTES = 48  # 48 random bytes -> 64 base64url characters (RFC 7636: 43..128)
_MAX_PARAM_CHARS = 4096
_SAFE_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_UNSAFE_REASON_CHARS = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class Callback:
    """A successful authorization response: the code to redeem and the state naming the attempt."""

    code: str = field(repr=False)
    state: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_attempt(
    redirect_to: str,
    *,
    now: float,
    token_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> LoginAttempt:
    """A fresh sign-in attempt: 32-byte state and nonce, a 64-character PKCE verifier."""
    return LoginAttempt(
        state=_b64url(token_bytes(_STATE_BYTES)),
        nonce=_b64url(token_bytes(_NONCE_BYTES)),
        code_verifier=_b64url(token_bytes(_VERIFIER_BYTES)),
        redirect_to=redirect_to,
        created_at=now,
    )


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 `S256`: base64url(SHA-256(ASCII(verifier))) without padding."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def _with_query(url: str, params: Mapping[str, str]) -> str:
    """Append `params` to `url`, keeping any query the endpoint URL already has."""
    parts = urlsplit(url)
    encoded = urlencode(list(params.items()))
    query = "&".join(q for q in (parts.query, encoded) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def build_authorization_url(
    meta: ProviderMetadata,
    config: ProviderConfig,
    attempt: LoginAttempt,
    redirect_uri: str,
) -> str:
    """The URL that sends the browser to the provider for this attempt (code flow, PKCE S256)."""
    params: dict[str, str] = {
        "response_type": "code",
        "client_id": config.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(config.scopes),
        "state": attempt.state,
    }
    if config.is_oidc:
        params["nonce"] = attempt.nonce
    params["code_challenge"] = pkce_challenge(attempt.code_verifier)
    params["code_challenge_method"] = "S256"
    for name, value in config.extra_authorize_params.items():
        if name not in PROTECTED_AUTHORIZE_PARAMS:
            params[name] = value
    return _with_query(meta.authorization_endpoint, params)


def _sanitise(text: str, limit: int) -> str:
    """Printable ASCII only, truncated: safe to put in a log line."""
    return _UNSAFE_REASON_CHARS.sub("?", text[:limit])


def parse_callback(
    query: Mapping[str, str], *, expected_issuer: str | None, iss_required: bool = False
) -> Callback:
    """Read the provider's authorization response, or raise `LoginError` saying what went wrong.

    The `iss` check (RFC 9207) comes first, so an error response from a mixed-up provider is
    reported as such; with `iss_required` (the provider's metadata says it always sends `iss`,
    RFC 9207 2.4) a response without `iss` is refused too. The provider's `error_description` is
    attacker-controllable text: it goes only into the operator `reason`, never into the user's
    message.
    """
    iss = query.get("iss")
    if iss is None and iss_required and expected_issuer is not None:
        raise LoginError(
            "Sign-in came back from a different identity provider than expected.",
            code="issuer_mismatch",
            reason="callback without iss from a provider that promises it (RFC 9207)",
        )
    if iss is not None and expected_issuer is not None and iss != expected_issuer:
        raise LoginError(
            "Sign-in came back from a different identity provider than expected.",
            code="issuer_mismatch",
            reason=f"callback iss {_sanitise(iss, 200)!r} != expected {expected_issuer!r}",
        )
    error = query.get("error")
    if error is not None:
        shown = error if _SAFE_ERROR_CODE.fullmatch(error) else "unknown_error"
        description = _sanitise(query.get("error_description", ""), 200)
        raise LoginError(
            f"The identity provider did not complete the sign-in ({shown}).",
            code="provider_error",
            reason=f"provider error={shown} description={description!r}",
        )
    code = query.get("code")
    state = query.get("state")
    if not code or not state:
        missing = " and ".join(n for n, v in (("code", code), ("state", state)) if not v)
        raise LoginError(code="callback_invalid", reason=f"callback without {missing}")
    if len(code) > _MAX_PARAM_CHARS or len(state) > _MAX_PARAM_CHARS:
        raise LoginError(code="callback_invalid", reason="callback code or state too long")
    return Callback(code=code, state=state)


def build_end_session_url(
    meta: ProviderMetadata,
    id_token: str | None,
    post_logout_redirect_uri: str | None,
    *,
    client_id: str | None = None,
) -> str | None:
    """RP-initiated logout URL (OpenID Connect RP-Initiated Logout 1.0), or None if unsupported."""
    if not meta.end_session_endpoint:
        return None
    params: dict[str, str] = {}
    if id_token:
        params["id_token_hint"] = id_token
    if client_id:
        params["client_id"] = client_id
    if post_logout_redirect_uri:
        params["post_logout_redirect_uri"] = post_logout_redirect_uri
    return _with_query(meta.end_session_endpoint, params)
