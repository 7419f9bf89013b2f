"""Claims and signatures of the dev provider's tokens (pure functions)."""

from __future__ import annotations

import pytest
from joserfc import jwt

from sidecar.dev.faults import Faults
from sidecar.dev.keys import SigningKeys
from sidecar.dev.provider_tokens import (
    build_id_token_claims,
    build_user,
    pkce_s256,
    read_own_token,
    release_user_claims,
    sign_token,
)

ISSUER = "http://127.0.0.1:9000"
NOW = 1_800_000_000.0
USER = build_user({"sub": "alice", "groups": ["g"]})


def test_pkce_s256_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_build_user_fills_defaults_from_one_name() -> None:
    assert build_user({"preferred_username": "Bob Builder"}) == {
        "sub": "Bob Builder",
        "name": "Bob Builder",
        "preferred_username": "Bob Builder",
        "email": "bob.builder@example.com",
        "email_verified": True,
        "groups": [],
    }


def test_build_user_needs_a_name() -> None:
    with pytest.raises(ValueError, match="sub"):
        build_user({"email": "x@example.com"})


def test_scopes_release_only_their_claims() -> None:
    assert release_user_claims(USER, frozenset({"openid"})) == {"sub": "alice", "groups": ["g"]}
    with_email = release_user_claims(USER, frozenset({"openid", "email"}))
    assert with_email["email"] == "alice@example.com"
    assert "name" not in with_email


def id_claims(faults: Faults, nonce: str | None = "n") -> dict[str, object]:
    return build_id_token_claims(
        user=USER,
        scopes=frozenset({"openid", "profile", "email"}),
        issuer=ISSUER,
        client_id="app",
        nonce=nonce,
        sid="sid-1",
        auth_time=int(NOW) - 10,
        now=NOW,
        ttl_seconds=300,
        faults=faults,
    )


def test_honest_id_token_claims() -> None:
    claims = id_claims(Faults())
    assert claims["iss"] == ISSUER
    assert claims["aud"] == "app"
    assert claims["azp"] == "app"
    assert claims["exp"] == int(NOW) + 300
    assert claims["auth_time"] == int(NOW) - 10
    assert claims["nonce"] == "n"
    assert "nonce" not in id_claims(Faults(), nonce=None)


def test_signed_token_reads_back_and_foreign_or_expired_tokens_do_not() -> None:
    keys = SigningKeys()
    token = sign_token({"iss": ISSUER, "sub": "a", "exp": int(NOW) + 5}, keys)
    assert read_own_token(token, keys, issuer=ISSUER, now=NOW) == {
        "iss": ISSUER,
        "sub": "a",
        "exp": int(NOW) + 5,
    }
    assert read_own_token(token, keys, issuer="http://other", now=NOW) is None
    assert read_own_token(token, keys, issuer=ISSUER, now=NOW + 5) is None
    assert read_own_token(token, keys, issuer=ISSUER, now=NOW + 5, check_expiry=False) is not None
    assert read_own_token(token, SigningKeys(), issuer=ISSUER, now=NOW) is None
    assert read_own_token("not.a.token", keys, issuer=ISSUER, now=NOW) is None


def test_retired_keys_still_read_own_tokens_after_rotation() -> None:
    keys = SigningKeys()
    token = sign_token({"iss": ISSUER, "exp": int(NOW) + 5}, keys)
    keys.rotate()
    assert read_own_token(token, keys, issuer=ISSUER, now=NOW) is not None


def test_no_kid_fault_keeps_a_valid_signature() -> None:
    keys = SigningKeys()
    token = sign_token({"sub": "a"}, keys, Faults(no_kid=True))
    assert jwt.decode(token, keys.current, algorithms=["RS256"]).claims == {"sub": "a"}
