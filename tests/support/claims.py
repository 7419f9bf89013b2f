"""Claim sets for tests: a base set with some claims changed or removed.

`with_changes` is the one way the tests vary a set of claims (or query parameters): each change
sets a name, and a change to `drop` (None unless a test needs None as a value) removes it.
`logout_claims` is a back-channel logout token's claims as a provider sends them (OpenID
Back-Channel Logout 1.0, 2.4), for the unit tests and the security suite alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def with_changes(
    base: Mapping[str, Any], changes: Mapping[str, Any], *, drop: object = None
) -> dict[str, Any]:
    """A copy of `base` with `changes` applied; a change whose value is `drop` removes the name."""
    result = dict(base)
    for name, value in changes.items():
        if value is drop:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def logout_claims(issuer: str, audience: str, now: int, **changes: Any) -> dict[str, Any]:
    """A valid logout token's claims for user `alice`, a fresh `jti`, valid for two minutes;
    `changes` set claims (None: remove one)."""
    base = {
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
        "events": {LOGOUT_EVENT: {}},
        "sub": "alice",
    }
    return with_changes(base, changes)
