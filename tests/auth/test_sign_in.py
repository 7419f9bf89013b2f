"""Sign-in pieces that are plain values: claim merging and session ids (the flow itself is
exercised end to end in test_handlers)."""

from __future__ import annotations

from sidecar.auth.sign_in import merge_claims


def test_merge_claims_prefers_userinfo_profile_but_keeps_the_id_tokens_subject() -> None:
    id_claims = {
        "iss": "https://idp.test",
        "sub": "alice",
        "aud": "client",
        "exp": 2,
        "iat": 1,
        "nonce": "n",
        "at_hash": "h",
        "sid": "s-1",
        "email": "old@example.org",
    }
    userinfo = {"sub": "mallory", "iss": "https://evil.test", "email": "alice@example.org"}
    merged = merge_claims(id_claims, userinfo)
    assert merged == {
        "iss": "https://idp.test",
        "sub": "alice",
        "sid": "s-1",
        "email": "alice@example.org",
    }


def test_merge_claims_without_an_id_token_uses_userinfo() -> None:
    assert merge_claims({}, {"sub": "u1", "login": "octocat"}) == {"sub": "u1", "login": "octocat"}
