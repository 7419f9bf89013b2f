"""Access-token refresh: when it is due, and doing it once per session however many requests ask.

`needs_refresh` is the pure decision (the access token expires within `margin` seconds and a
refresh token is at hand). `RefreshCoordinator` runs the refresh itself, with two guarantees that
matter for providers rotating one-time refresh tokens:

- single flight: concurrent requests of one session (keyed by session id) await the one refresh
  in progress instead of each spending the refresh token;
- grace: after session S was refreshed, a request that still carries S's pre-refresh cookie
  (recognised by session id and a digest of the old refresh token) within `grace_seconds` gets the
  refreshed session instead of refreshing again with a token the provider no longer accepts.
  A refresh the provider rejected is remembered the same way, so late requests fail fast.

`RefreshRejectedError` (invalid_grant) ends the session; `ProviderUnavailableError` leaves it to
the caller to keep serving the old tokens while `still_usable` holds. State is per process.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sidecar.errors import RefreshRejectedError
from sidecar.session.model import Session

RefreshFunction = Callable[[Session], Awaitable[Session]]


def needs_refresh(session: Session, *, now: float, margin: float) -> bool:
    """True when the access token expires within `margin` seconds and can be refreshed."""
    tokens = session.tokens
    if not tokens.refresh_token or tokens.expires_at is None:
        return False
    return now >= tokens.expires_at - margin


def still_usable(session: Session, *, now: float) -> bool:
    """True while the access token has not really expired (or its expiry is unknown)."""
    expires_at = session.tokens.expires_at
    return expires_at is None or now < expires_at


def _grace_key(session: Session) -> tuple[str, str]:
    token = session.tokens.refresh_token or ""
    return session.id, hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class _Outcome:
    session: Session | None  # None: the provider rejected the refresh
    until: float


class RefreshCoordinator:
    """Single-flight refresh per session id, plus a bounded grace cache of recent outcomes."""

    def __init__(
        self,
        refresh: RefreshFunction,
        *,
        clock: Callable[[], float],
        grace_seconds: float,
        max_entries: int = 10_000,
    ) -> None:
        self._refresh = refresh
        self._clock = clock
        self._grace_seconds = grace_seconds
        self._max_entries = max_entries
        self._in_flight: dict[str, asyncio.Task[Session]] = {}
        self._recent: OrderedDict[tuple[str, str], _Outcome] = OrderedDict()
        self.refreshes_started = 0

    async def refresh(self, session: Session) -> Session:
        """The refreshed session for `session`, refreshing at most once for concurrent callers.

        Raises `RefreshRejectedError` when the provider refused the refresh token and whatever the
        refresh function raises otherwise (typically `ProviderUnavailableError`).
        """
        key = _grace_key(session)
        outcome = self._lookup(key)
        if outcome is not None:
            if outcome.session is None:
                raise RefreshRejectedError(reason="refresh already rejected for this session")
            return outcome.session
        task = self._in_flight.get(session.id)
        if task is None:
            task = asyncio.ensure_future(self._refresh(session))
            self.refreshes_started += 1
            self._in_flight[session.id] = task
            task.add_done_callback(lambda done: self._finished(session.id, key, done))
        # shield: a client that goes away must not cancel the refresh the others wait for.
        return await asyncio.shield(task)

    def _finished(self, session_id: str, key: tuple[str, str], task: asyncio.Task[Session]) -> None:
        if self._in_flight.get(session_id) is task:
            del self._in_flight[session_id]
        if task.cancelled():
            return
        error = task.exception()  # also marks it retrieved when no waiter is left
        if error is None:
            self._remember(key, task.result())
        elif isinstance(error, RefreshRejectedError):
            self._remember(key, None)

    def _lookup(self, key: tuple[str, str]) -> _Outcome | None:
        outcome = self._recent.get(key)
        if outcome is None:
            return None
        if self._clock() >= outcome.until:
            del self._recent[key]
            return None
        return outcome

    def _remember(self, key: tuple[str, str], session: Session | None) -> None:
        if self._grace_seconds <= 0:
            return
        now = self._clock()
        while self._recent:
            oldest_key, oldest = next(iter(self._recent.items()))
            if oldest.until > now and len(self._recent) < self._max_entries:
                break
            del self._recent[oldest_key]
        self._recent[key] = _Outcome(session, now + self._grace_seconds)
        self._recent.move_to_end(key)
