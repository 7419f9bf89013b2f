"""Identity headers: which header values tell the backend who the user is.

`build_identity_headers` turns a signed-in user's `Identity` (and, when enabled, their access
token) into the `(name, value)` pairs the proxy adds upstream after it has stripped every
client-sent copy (`sidecar.proxy.headers`); `build_auth_request_headers` gives the same identity
as the fixed `X-Auth-Request-*` set that forward-auth answers (`sidecar.auth.forward_auth`).
`headers.claims` maps a header name to an identity field (`user`, `sub`, `email`, `username`,
`groups`, `email_verified`) or to a claim name; a dotted path reaches nested claims. Lists are
comma-joined (items containing a comma are left out). A value carrying a control character (CR,
LF, NUL, ...) is never sent: that header is skipped, so a hostile claim cannot split or forge
headers. `IdentityHeaderCache` builds them once per session: the cookie store hands back the same
decoded `Identity` and `Tokens` objects for the same cookie, so the headers are kept for exactly
those objects (a refresh brings new `Tokens`, hence new headers).
Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from sidecar.config.model import HeadersConfig
from sidecar.endpoints import X_AUTH_REQUEST_HEADERS, X_FORWARDED_ACCESS_TOKEN
from sidecar.oidc.tokens import claim_at
from sidecar.session.model import Identity, Tokens

_FIELDS = ("user", "sub", "email", "username", "groups", "email_verified")


def _field(identity: Identity, source: str) -> Any:
    if source in _FIELDS:
        return getattr(identity, source)
    return claim_at(identity.claims, source)


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return None


def format_header_value(value: Any) -> str | None:
    """The header text for a claim value, or None when it must not be sent.

    Strings, numbers and booleans are sent as text; lists and tuples of them comma-joined with
    ",". An item that itself contains a comma is left out: a group named "staff,admins" would
    otherwise read as the two groups staff and admins to a backend that splits the header.
    Missing, empty, nested and control-character values give None.
    """
    if isinstance(value, list | tuple):
        items = [_scalar_text(item) for item in value]
        if any(item is None for item in items):
            return None
        text = ",".join(item for item in items if item and "," not in item)
    else:
        scalar = _scalar_text(value)
        if scalar is None:
            return None
        text = scalar.strip()
    if not text or _has_control(text):
        return None
    return text


_has_control = re.compile(r"[\x00-\x1f\x7f]").search
"""A match (truthy) when the text holds a control character: C0 (CR, LF, NUL, ...) or DEL."""


def _header_safe_token(token: str) -> bool:
    return _has_control(token) is None and " " not in token


def build_identity_headers(
    identity: Identity, tokens: Tokens | None, headers_config: HeadersConfig
) -> list[tuple[str, str]]:
    """The identity headers for one request, in configuration order (tokens last)."""
    result: list[tuple[str, str]] = []
    for name, source in headers_config.claims.items():
        text = format_header_value(_field(identity, source))
        if text is not None:
            result.append((name, text))
    if not (headers_config.access_token or headers_config.authorization):
        return result  # no token header: the access token is not looked at
    access_token = tokens.access_token if tokens is not None else None
    if access_token and _header_safe_token(access_token):
        if headers_config.access_token:
            result.append((X_FORWARDED_ACCESS_TOKEN, access_token))
        if headers_config.authorization:
            result.append(("Authorization", f"Bearer {access_token}"))
    return result


class IdentityHeaderCache:
    """`build_identity_headers` for one headers configuration, remembered per (identity, tokens).

    Entries are keyed by the objects' `id()` and keep a reference to both objects, and a hit
    requires the very same objects (`is`), so an id reused after garbage collection can never
    answer with another session's headers. Bounded: least recently used entries go first.
    """

    def __init__(self, headers_config: HeadersConfig, *, size: int = 1024) -> None:
        self._config = headers_config
        self._size = size
        self._entries: OrderedDict[
            tuple[int, int], tuple[Identity, Tokens | None, tuple[tuple[str, str], ...]]
        ] = OrderedDict()

    def headers(self, identity: Identity, tokens: Tokens | None) -> Sequence[tuple[str, str]]:
        """The identity headers for this identity and these tokens (see build_identity_headers)."""
        key = (id(identity), id(tokens))
        entry = self._entries.get(key)
        if entry is not None and entry[0] is identity and entry[1] is tokens:
            self._entries.move_to_end(key)
            return entry[2]
        built = tuple(build_identity_headers(identity, tokens, self._config))
        if self._size > 0:
            self._entries[key] = (identity, tokens, built)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return built


*_IDENTITY_NAMES, X_AUTH_REQUEST_ACCESS_TOKEN = X_AUTH_REQUEST_HEADERS
_AUTH_REQUEST_FIELDS = tuple(
    zip(_IDENTITY_NAMES, ("user", "email", "groups", "username"), strict=True)
)


def build_auth_request_headers(
    identity: Identity, tokens: Tokens | None, headers_config: HeadersConfig
) -> list[tuple[str, str]]:
    """The `X-Auth-Request-User`, `-Email`, `-Groups`, `-Preferred-Username` headers (oauth2-proxy's
    names) for a forward-auth answer, plus `-Access-Token` when `headers.access_token` is on.
    Values are formatted and refused exactly as `build_identity_headers` does."""
    result: list[tuple[str, str]] = []
    for name, source in _AUTH_REQUEST_FIELDS:
        text = format_header_value(getattr(identity, source))
        if text is not None:
            result.append((name, text))
    access_token = tokens.access_token if tokens is not None else None
    if headers_config.access_token and access_token and _header_safe_token(access_token):
        result.append((X_AUTH_REQUEST_ACCESS_TOKEN, access_token))
    return result
