"""Tests for sidecar.oidc.flow: attempts, PKCE, authorization and logout URLs, callback parsing."""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config.model import ProviderConfig
from sidecar.errors import LoginError
from sidecar.oidc.discovery import ProviderMetadata
from sidecar.oidc.flow import (
    PROTECTED_AUTHORIZE_PARAMS,
    Callback,
    build_authorization_url,
    build_end_session_url,
    new_attempt,
    parse_callback,
    pkce_challenge,
)
from sidecar.session.attempts import LoginAttempt

ISSUER = "https://id.example.com"
META = ProviderMetadata(
    issuer=ISSUER,
    authorization_endpoint="https://id.example.com/authorize",
    token_endpoint="https://id.example.com/token",
    jwks_uri="https://id.example.com/jwks",
    end_session_endpoint="https://id.example.com/logout?ui=1",
)


def provider(**overrides: object) -> ProviderConfig:
    values: dict[str, object] = {"issuer": ISSUER, "client_id": "app", "client_secret": "s3cret"}
    values.update(overrides)
    return ProviderConfig.model_validate(values)


_COUNTER = itertools.count(1)


def counting_bytes(n: int) -> bytes:
    """Deterministic 'randomness': each call returns n copies of the next byte value."""
    return bytes([next(_COUNTER) % 256]) * n


ISSUER_MISMATCH_MESSAGE = "Sign-in came back from a different identity provider than expected."

ATTEMPT = LoginAttempt(
    state="the-state",
    nonce="the-nonce",
    code_verifier="dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    redirect_to="/app?x=1",
    created_at=1000.0,
)


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def test_pkce_challenge_matches_rfc7636_appendix_b() -> None:
    # RFC 7636 Appendix B: the challenge for this verifier is E9Melhoa2...Sstw-cM
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@given(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~",
        min_size=43,
        max_size=128,
    )
)
def test_pkce_challenge_is_unpadded_base64url_sha256(verifier: str) -> None:
    challenge = pkce_challenge(verifier)
    assert "=" not in challenge and len(challenge) == 43
    padded = challenge + "="
    assert base64.urlsafe_b64decode(padded) == hashlib.sha256(verifier.encode()).digest()


def test_new_attempt_draws_fresh_random_values_of_the_right_size() -> None:
    attempt = new_attempt("/after", now=1234.5, token_bytes=counting_bytes)
    assert attempt.redirect_to == "/after"
    assert attempt.created_at == 1234.5
    assert len(base64.urlsafe_b64decode(attempt.state + "=")) == 32
    assert len(base64.urlsafe_b64decode(attempt.nonce + "=")) == 32
    assert len(attempt.code_verifier) == 64
    assert len({attempt.state, attempt.nonce, attempt.code_verifier}) == 3


def test_new_attempt_default_randomness_differs_each_time() -> None:
    first, second = new_attempt("/", now=0), new_attempt("/", now=0)
    assert first.state != second.state and first.nonce != second.nonce
    assert first.code_verifier != second.code_verifier


def test_new_attempt_repr_hides_the_secrets() -> None:
    attempt = new_attempt("/", now=0)
    assert attempt.state not in repr(attempt)
    assert attempt.code_verifier not in repr(attempt)


def test_authorization_url_carries_every_required_parameter() -> None:
    url = build_authorization_url(
        META, provider(), ATTEMPT, "https://app.example.com/oauth2/callback"
    )
    assert url.startswith("https://id.example.com/authorize?")
    assert query_of(url) == {
        "response_type": ["code"],
        "client_id": ["app"],
        "redirect_uri": ["https://app.example.com/oauth2/callback"],
        "scope": ["openid email profile"],
        "state": ["the-state"],
        "nonce": ["the-nonce"],
        "code_challenge": ["E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"],
        "code_challenge_method": ["S256"],
    }


def test_authorization_url_never_contains_the_verifier() -> None:
    url = build_authorization_url(META, provider(), ATTEMPT, "https://app/cb")
    assert ATTEMPT.code_verifier not in url


def test_authorization_url_adds_extra_params_but_never_lets_them_override() -> None:
    extra = {name: "evil" for name in PROTECTED_AUTHORIZE_PARAMS}
    extra |= {"prompt": "login", "acr_values": "mfa"}
    url = build_authorization_url(
        META, provider(extra_authorize_params=extra), ATTEMPT, "https://app/cb"
    )
    query = query_of(url)
    assert query["prompt"] == ["login"] and query["acr_values"] == ["mfa"]
    assert "evil" not in url
    assert query["state"] == ["the-state"]
    assert query["code_challenge_method"] == ["S256"]
    assert "request" not in query and "response_mode" not in query


def test_authorization_url_for_plain_oauth_has_no_nonce_but_still_pkce() -> None:
    config = provider(
        issuer=None,
        discovery=False,
        scopes=["read:user"],
        authorization_endpoint="https://github.example/login/oauth/authorize",
        token_endpoint="https://github.example/login/oauth/access_token",
        userinfo_endpoint="https://api.github.example/user",
    )
    meta = ProviderMetadata(
        issuer=None,
        authorization_endpoint="https://github.example/login/oauth/authorize",
        token_endpoint="https://github.example/login/oauth/access_token",
    )
    query = query_of(build_authorization_url(meta, config, ATTEMPT, "https://app/cb"))
    assert "nonce" not in query
    assert query["code_challenge_method"] == ["S256"]
    assert query["scope"] == ["read:user"]


def test_authorization_url_keeps_the_endpoints_own_query() -> None:
    meta = ProviderMetadata(
        issuer=ISSUER,
        authorization_endpoint="https://login.example/authorize?p=B2C_1_signin",
        token_endpoint="https://login.example/token",
    )
    query = query_of(build_authorization_url(meta, provider(), ATTEMPT, "https://app/cb"))
    assert query["p"] == ["B2C_1_signin"] and query["state"] == ["the-state"]


@pytest.mark.parametrize(
    ("query", "code", "reason_part"),
    [
        ({"state": "s"}, "callback_invalid", "without code"),
        ({"code": "c"}, "callback_invalid", "without state"),
        ({"code": "", "state": ""}, "callback_invalid", "without code and state"),
        ({}, "callback_invalid", "without code and state"),
        ({"code": "c" * 5000, "state": "s"}, "callback_invalid", "too long"),
        ({"code": "c", "state": "s", "iss": "https://evil.example"}, "issuer_mismatch", "evil"),
        (
            {"error": "access_denied", "iss": "https://evil.example", "state": "s"},
            "issuer_mismatch",
            "expected",
        ),
        ({"error": "access_denied", "state": "s"}, "provider_error", "access_denied"),
        ({"error": "server_error", "error_description": "oops"}, "provider_error", "oops"),
    ],
)
def test_parse_callback_rejects(query: dict[str, str], code: str, reason_part: str) -> None:
    with pytest.raises(LoginError) as caught:
        parse_callback(query, expected_issuer=ISSUER)
    assert caught.value.code == code
    assert reason_part in caught.value.reason
    assert caught.value.status == 400


def test_parse_callback_provider_error_message_names_the_code() -> None:
    with pytest.raises(LoginError) as caught:
        parse_callback({"error": "access_denied", "state": "s"}, expected_issuer=ISSUER)
    assert "access_denied" in caught.value.message


def test_parse_callback_never_shows_provider_text_to_the_user() -> None:
    query = {
        "error": "<script>alert(1)</script>",
        "error_description": "Call +1 555 0100 to unlock your account\r\nX-Injected: 1",
        "state": "s",
    }
    with pytest.raises(LoginError) as caught:
        parse_callback(query, expected_issuer=ISSUER)
    error = caught.value
    assert "<script>" not in error.message and "555" not in error.message
    assert "unknown_error" in error.message
    assert "\r" not in error.reason and "\n" not in error.reason
    assert "<script>" not in error.reason


def test_parse_callback_accepts_code_and_state() -> None:
    assert parse_callback({"code": "c", "state": "s"}, expected_issuer=ISSUER) == Callback("c", "s")


def test_parse_callback_accepts_the_matching_iss() -> None:
    query = {"code": "c", "state": "s", "iss": ISSUER}
    assert parse_callback(query, expected_issuer=ISSUER) == Callback("c", "s")


def test_parse_callback_without_configured_issuer_ignores_iss() -> None:
    query = {"code": "c", "state": "s", "iss": "https://whatever"}
    assert parse_callback(query, expected_issuer=None).code == "c"


def test_callback_repr_hides_the_code() -> None:
    assert "secret-code" not in repr(Callback(code="secret-code", state="s"))


def test_end_session_url_carries_hint_client_and_return_address() -> None:
    url = build_end_session_url(META, "id.token.jwt", "https://app/", client_id="app")
    assert url is not None and url.startswith("https://id.example.com/logout?")
    assert query_of(url) == {
        "ui": ["1"],
        "id_token_hint": ["id.token.jwt"],
        "client_id": ["app"],
        "post_logout_redirect_uri": ["https://app/"],
    }


def test_end_session_url_without_token_or_redirect() -> None:
    url = build_end_session_url(META, None, None)
    assert url == "https://id.example.com/logout?ui=1"


def test_end_session_url_is_none_without_an_endpoint() -> None:
    meta = ProviderMetadata(
        issuer=ISSUER, authorization_endpoint="https://a", token_endpoint="https://t"
    )
    assert build_end_session_url(meta, "x.y.z", "https://app/") is None


@given(
    st.dictionaries(
        st.sampled_from(["code", "state", "iss", "error", "error_description", "x"]),
        st.text(max_size=300),
    )
)
def test_parse_callback_only_ever_returns_a_callback_or_raises_login_error(
    query: dict[str, str],
) -> None:
    try:
        callback = parse_callback(query, expected_issuer=ISSUER)
    except LoginError as error:
        assert error.code in {"callback_invalid", "issuer_mismatch", "provider_error"}
        shown = re.fullmatch(
            r"The identity provider did not complete the sign-in \((.*)\)\.", error.message
        )
        if shown:  # the only provider text a user ever sees: a short, safe error code
            assert re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", shown.group(1))
        else:
            assert error.message in {LoginError.message, ISSUER_MISMATCH_MESSAGE}
    else:
        assert (callback.code, callback.state) == (query["code"], query["state"])
        assert "error" not in query
