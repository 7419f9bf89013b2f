"""Sign-in attempts in flight: each one's state, nonce and PKCE verifier in its own cookie.

Every `/oauth2/start` (or protected URL without a session) creates a `LoginAttempt` and stores it
encrypted (codec purpose "login", so it can never pass for a session cookie) in a cookie named
`<session cookie name>_login_<id>`, where `id` is 8 base64url characters of SHA-256(state). One
cookie per attempt means several tabs can sign in at once; `build_attempt_cookie` caps their number
(oldest dropped first, by the `created_at` inside; undecodable or expired ones are dropped too), so
they can never grow the request past header limits. The callback finds its attempt by the state in
the query (`take_attempt`), checks it in constant time and deletes the cookie, so a replayed
callback finds nothing (a copied cookie value replayed elsewhere is bounded by the timeout and by
the provider's single-use code). Attempt cookies carry the session cookie's attributes, except
that SameSite is at most Lax: the provider's redirect back is a cross-site top-level navigation,
which Strict cookies would not survive.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar.session.codec import FUTURE_SKEW_SECONDS, SessionCodec, SessionDecodeError
from sidecar.session.cookies import CookiePolicy, build_delete_cookie, build_set_cookie

PURPOSE = "login"
ID_CHARS = 8

_ATTEMPT_ID = re.compile(rf"[A-Za-z0-9_-]{{{ID_CHARS}}}")


@dataclass(frozen=True)
class LoginAttempt:
    """One sign-in in progress. `created_at` is epoch seconds; secrets are hidden from repr."""

    state: str = field(repr=False)
    nonce: str = field(repr=False)
    code_verifier: str = field(repr=False)
    redirect_to: str
    created_at: float

    def to_payload(self) -> bytes:
        data = {
            "s": self.state,
            "n": self.nonce,
            "v": self.code_verifier,
            "r": self.redirect_to,
            "t": self.created_at,
        }
        return json.dumps(data, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_payload(cls, payload: bytes) -> LoginAttempt:
        """Parse what `to_payload` made; ValueError for anything else."""
        data: Any = json.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        created_at = data.get("t")
        if isinstance(created_at, bool) or not isinstance(created_at, int | float):
            raise ValueError("missing or mistyped created_at")
        return cls(
            state=_text(data, "s"),
            nonce=_text(data, "n"),
            code_verifier=_text(data, "v"),
            redirect_to=_text(data, "r"),
            created_at=float(created_at),
        )


def attempt_cookie_name(policy: CookiePolicy, state: str) -> str:
    """`<name>_login_<id>`: the id is derived from the state, so the callback finds its cookie."""
    digest = hashlib.sha256(state.encode("utf-8", "surrogatepass")).digest()
    attempt_id = base64.urlsafe_b64encode(digest).decode("ascii")[:ID_CHARS]
    return f"{policy.name}_login_{attempt_id}"


def is_attempt_cookie(policy: CookiePolicy, name: str) -> bool:
    prefix = f"{policy.name}_login_"
    return name.startswith(prefix) and _ATTEMPT_ID.fullmatch(name[len(prefix) :]) is not None


def build_attempt_cookie(
    codec: SessionCodec,
    policy: CookiePolicy,
    attempt: LoginAttempt,
    present: Mapping[str, str],
    *,
    now: float,
    max_attempts: int,
    timeout: float | None = None,
) -> list[str]:
    """Set-Cookie values storing `attempt` (valid `timeout` seconds) and pruning older attempts.

    `timeout` defaults to the policy's `login_timeout_seconds` (from the config). At most
    `max_attempts` attempts remain afterwards, the new one included: the oldest others are
    deleted, as are attempt cookies that do not decode or have expired.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if timeout is None:
        timeout = policy.login_timeout_seconds
    name = attempt_cookie_name(policy, attempt.state)
    headers: list[str] = []
    live: list[tuple[float, str]] = []
    for other, value in present.items():
        if other == name or not is_attempt_cookie(policy, other):
            continue
        found = _open(codec, policy, other, value, now=now, timeout=timeout)
        if found is None:
            headers.append(build_delete_cookie(policy, other))
        else:
            live.append((found.created_at, other))
    live.sort()
    excess = len(live) - (max_attempts - 1)
    headers.extend(build_delete_cookie(policy, other) for _, other in live[: max(0, excess)])
    value = codec.encode(attempt.to_payload(), purpose=PURPOSE, now=now)
    headers.append(
        build_set_cookie(
            policy,
            name,
            value,
            max_age_seconds=math.ceil(timeout),
            same_site="Lax" if policy.same_site == "Strict" else None,
        )
    )
    return headers


def take_attempt(
    codec: SessionCodec,
    policy: CookiePolicy,
    state: str,
    present: Mapping[str, str],
    *,
    now: float,
    timeout: float,
) -> tuple[LoginAttempt | None, list[str]]:
    """The attempt the callback's `state` belongs to, and Set-Cookie values deleting its cookie.

    None when there is no such cookie, it does not decode, its state differs, or it is older than
    `timeout` seconds. The cookie is deleted either way, so each attempt completes at most once.
    """
    name = attempt_cookie_name(policy, state)
    value = present.get(name)
    if value is None:
        return None, []
    delete = [build_delete_cookie(policy, name)]
    attempt = _open(codec, policy, name, value, now=now, timeout=timeout)
    if attempt is None or not hmac.compare_digest(
        attempt.state.encode("utf-8", "surrogatepass"), state.encode("utf-8", "surrogatepass")
    ):
        return None, delete
    return attempt, delete


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError("missing or mistyped field")
    return value


def _open(
    codec: SessionCodec, policy: CookiePolicy, name: str, value: str, *, now: float, timeout: float
) -> LoginAttempt | None:
    """The attempt in cookie `name`, if it decodes, belongs under that name and is not expired."""
    try:
        attempt = LoginAttempt.from_payload(
            codec.decode(value, purpose=PURPOSE, now=now, max_age_seconds=timeout)
        )
    except (SessionDecodeError, ValueError):
        return None
    if attempt_cookie_name(policy, attempt.state) != name:
        return None  # a valid attempt moved to another cookie name
    if not now - timeout <= attempt.created_at <= now + FUTURE_SKEW_SECONDS:
        return None
    return attempt
