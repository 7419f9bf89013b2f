"""Sign-in attempts: what one browser tab's login must remember until the callback.

Each attempt (state, nonce, PKCE verifier, where to land afterwards) lives in its own short-lived
encrypted cookie, so several tabs can sign in at once. This module owns the attempt value and its
cookies (the cookie functions are added by the session helper).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoginAttempt:
    """One sign-in in progress. `created_at` is epoch seconds; secrets are hidden from repr."""

    state: str = field(repr=False)
    nonce: str = field(repr=False)
    code_verifier: str = field(repr=False)
    redirect_to: str
    created_at: float
