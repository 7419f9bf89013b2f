"""The dev provider's in-memory sessions, codes and refresh tokens."""

from __future__ import annotations

import itertools

from sidecar.dev.provider_grants import CODE_TTL_SECONDS, Grant, GrantStore

NOW = 1_800_000_000.0


def store() -> GrantStore:
    counter = itertools.count()
    return GrantStore(token_urlsafe=lambda n: f"t{next(counter)}")


def grant_for(s: GrantStore) -> Grant:
    session = s.start_session({"sub": "alice"}, now=NOW)
    return Grant("app", session, frozenset({"openid"}), "nonce")


def test_codes_are_one_time_and_expire() -> None:
    s = store()
    grant = grant_for(s)
    code = s.issue_code(grant, redirect_uri="http://rp/cb", code_challenge=None, now=NOW)
    pending = s.take_code(code, now=NOW)
    assert pending is not None
    assert pending.grant == grant
    assert s.take_code(code, now=NOW) is None
    late = s.issue_code(grant, redirect_uri="http://rp/cb", code_challenge=None, now=NOW)
    assert s.take_code(late, now=NOW + CODE_TTL_SECONDS) is None


def test_rotating_refresh_tokens_are_one_time_others_are_not() -> None:
    s = store()
    token = s.issue_refresh_token(grant_for(s))
    assert s.take_refresh_token(token, rotate=False) is not None
    assert s.take_refresh_token(token, rotate=True) is not None
    assert s.take_refresh_token(token, rotate=True) is None


def test_ending_a_session_revokes_its_refresh_tokens_only() -> None:
    s = store()
    mine = grant_for(s)
    other = grant_for(s)
    mine_token = s.issue_refresh_token(mine)
    other_token = s.issue_refresh_token(other)
    assert s.end_session(mine.session.sid)
    assert s.session(mine.session.sid) is None
    assert s.refresh_grant(mine_token) is None
    assert s.refresh_grant(other_token) is not None
    assert not s.end_session(mine.session.sid)
