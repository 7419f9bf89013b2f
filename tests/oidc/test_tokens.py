"""Tests for sidecar.oidc.tokens: every OIDC Core 3.1.3.7 check, broken one at a time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, Key, KeySet, OKPKey, RSAKey

from sidecar.config.model import ClaimsConfig, ProviderConfig
from sidecar.errors import IdTokenError, LoginError
from sidecar.oidc.tokens import (
    MAX_ID_TOKEN_BYTES,
    TokenResponse,
    TokenResponseError,
    UnknownKeyError,
    access_token_expiry,
    build_identity,
    check_userinfo_subject,
    parse_token_response,
    token_kid,
    validate_id_token,
)

ISSUER = "https://id.example.com"
CLIENT = "app"
NONCE = "nonce-abc"
NOW = 1_800_000_000.0
LEEWAY = 60
ALGORITHMS = ProviderConfig.model_fields["id_token_algorithms"].default
_DROP = object()
Jwks = Callable[..., dict[str, Any]]  # the public_jwks fixture (conftest.py)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "user-1",
        "exp": int(NOW) + 300,
        "iat": int(NOW),
        "nonce": NONCE,
        "email": "ada@example.com",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


def mint(key: Key, alg: str = "RS256", header: dict[str, Any] | None = None, **changes: Any) -> str:
    full_header: dict[str, Any] = {"alg": alg, "kid": key.kid}
    full_header.update(header or {})
    full_header = {k: v for k, v in full_header.items() if v is not _DROP}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EdDSA naming is deprecated; providers still use it
        return jwt.encode(full_header, claims(**changes), key, algorithms=[alg])


def public_set(jwks: Jwks, *keys: Key) -> KeySet:
    return KeySet.import_key_set(jwks(*keys))  # type: ignore[arg-type]


def validate(token: str, keys: KeySet, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "keys": keys,
        "issuer": ISSUER,
        "client_id": CLIENT,
        "nonce": NONCE,
        "now": NOW,
        "leeway": LEEWAY,
        "algorithms": ALGORITHMS,
    }
    options.update(overrides)
    return validate_id_token(token, **options)


@pytest.fixture
def keys(rsa_key: RSAKey, ec_key: ECKey, ed_key: OKPKey, public_jwks: Jwks) -> KeySet:
    return public_set(public_jwks, rsa_key, ec_key, ed_key)


# -- tokens that pass ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_name", "alg"),
    [("rsa_key", "RS256"), ("rsa_key", "PS256"), ("ec_key", "ES256"), ("ed_key", "EdDSA")],
)
def test_valid_token_is_accepted(
    key_name: str, alg: str, keys: KeySet, request: pytest.FixtureRequest
) -> None:
    key: Key = request.getfixturevalue(key_name)
    result = validate(mint(key, alg), keys)
    assert result["sub"] == "user-1" and result["email"] == "ada@example.com"


def test_several_audiences_with_our_azp_are_accepted(rsa_key: RSAKey, keys: KeySet) -> None:
    token = mint(rsa_key, aud=[CLIENT, "api"], azp=CLIENT)
    assert validate(token, keys)["azp"] == CLIENT


def test_expiry_within_leeway_is_accepted(rsa_key: RSAKey, keys: KeySet) -> None:
    assert validate(mint(rsa_key, exp=int(NOW) - 30), keys)


def test_token_without_kid_is_accepted_when_the_provider_has_one_key(
    rsa_key: RSAKey, public_jwks: Jwks
) -> None:
    token = mint(rsa_key, header={"kid": _DROP})
    assert validate(token, public_set(public_jwks, rsa_key))["sub"] == "user-1"


def test_refreshed_id_token_without_nonce_is_checked_by_subject(
    rsa_key: RSAKey, keys: KeySet
) -> None:
    token = mint(rsa_key, nonce=_DROP)
    assert validate(token, keys, nonce=None, expected_sub="user-1")["sub"] == "user-1"
    with pytest.raises(IdTokenError) as caught:
        validate(token, keys, nonce=None, expected_sub="someone-else")
    assert caught.value.reason.startswith("sub:")


def test_nonce_none_without_expected_sub_is_refused(rsa_key: RSAKey, keys: KeySet) -> None:
    with pytest.raises(IdTokenError):
        validate(mint(rsa_key), keys, nonce=None)


# -- each check broken one at a time ---------------------------------------------------------

Broken = Callable[[RSAKey], str]

BROKEN: list[tuple[str, Broken, str]] = [
    ("expired", lambda k: mint(k, exp=int(NOW) - LEEWAY - 1), "exp:"),
    ("exp missing", lambda k: mint(k, exp=_DROP), "claims: missing exp"),
    ("exp not a number", lambda k: mint(k, exp="tomorrow"), "exp:"),
    ("iat missing", lambda k: mint(k, iat=_DROP), "claims: missing iat"),
    ("iat in the future", lambda k: mint(k, iat=int(NOW) + LEEWAY + 5), "iat:"),
    ("nbf in the future", lambda k: mint(k, nbf=int(NOW) + LEEWAY + 5), "nbf:"),
    ("iss other", lambda k: mint(k, iss="https://evil.example.com"), "iss:"),
    ("iss with trailing slash", lambda k: mint(k, iss=ISSUER + "/"), "iss:"),
    ("iss missing", lambda k: mint(k, iss=_DROP), "claims: missing iss"),
    ("aud other", lambda k: mint(k, aud="other-app"), "aud:"),
    ("aud list without us", lambda k: mint(k, aud=["a", "b"], azp="a"), "aud:"),
    ("aud not a string", lambda k: mint(k, aud=42), "aud:"),
    ("aud missing", lambda k: mint(k, aud=_DROP), "claims: missing aud"),
    ("several aud, no azp", lambda k: mint(k, aud=[CLIENT, "api"]), "azp:"),
    ("several aud, other azp", lambda k: mint(k, aud=[CLIENT, "api"], azp="api"), "azp:"),
    ("azp other", lambda k: mint(k, azp="other-app"), "azp:"),
    ("nonce other", lambda k: mint(k, nonce="nonce-xyz"), "nonce:"),
    ("nonce missing", lambda k: mint(k, nonce=_DROP), "nonce:"),
    ("nonce not a string", lambda k: mint(k, nonce=123), "nonce:"),
    ("sub missing", lambda k: mint(k, sub=_DROP), "claims: missing sub"),
    ("sub not a string", lambda k: mint(k, sub=12345), "sub:"),
]


@pytest.mark.parametrize(("name", "make", "reason"), BROKEN, ids=[row[0] for row in BROKEN])
def test_broken_claim_is_rejected_with_a_named_reason(
    name: str, make: Broken, reason: str, rsa_key: RSAKey, keys: KeySet
) -> None:
    with pytest.raises(IdTokenError) as caught:
        validate(make(rsa_key), keys)
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert caught.value.code == "id_token_invalid"
    assert isinstance(caught.value, LoginError) and caught.value.status == 400


def test_token_signed_by_another_key_with_the_providers_kid_is_rejected(
    attacker_key: RSAKey, keys: KeySet
) -> None:
    with pytest.raises(IdTokenError) as caught:
        validate(mint(attacker_key), keys)
    assert caught.value.reason.startswith("signature:")


def test_tampered_payload_is_rejected(rsa_key: RSAKey, keys: KeySet) -> None:
    header, _, signature = mint(rsa_key).split(".")
    forged = b64json(claims(sub="admin"))
    with pytest.raises(IdTokenError) as caught:
        validate(f"{header}.{forged}.{signature}", keys)
    assert caught.value.reason.startswith("signature:")


def test_alg_none_is_rejected(keys: KeySet) -> None:
    token = f"{b64json({'alg': 'none', 'kid': 'rsa-1'})}.{b64json(claims())}."
    with pytest.raises(IdTokenError) as caught:
        validate(token, keys)
    assert caught.value.reason.startswith("alg:")


def test_alg_none_is_rejected_even_if_configured(keys: KeySet) -> None:
    token = f"{b64json({'alg': 'none'})}.{b64json(claims())}."
    with pytest.raises(IdTokenError):
        validate(token, keys, algorithms=["none", "RS256"])


def test_hmac_signed_with_the_public_key_is_rejected(rsa_key: RSAKey, keys: KeySet) -> None:
    """The classic key-confusion attack: HS256 keyed with the provider's public key PEM."""
    pem = rsa_key.as_pem(private=False)
    signing_input = f"{b64json({'alg': 'HS256', 'kid': 'rsa-1'})}.{b64json(claims())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(signature)}"
    for algorithms in (ALGORITHMS, [*ALGORITHMS, "HS256"]):
        with pytest.raises(IdTokenError) as caught:
            validate(token, keys, algorithms=algorithms)
        assert caught.value.reason.startswith("alg:")


def test_alg_outside_the_configured_list_is_rejected(rsa_key: RSAKey, keys: KeySet) -> None:
    with pytest.raises(IdTokenError) as caught:
        validate(mint(rsa_key, "RS256"), keys, algorithms=["ES256"])
    assert caught.value.reason.startswith("alg:")


def test_alg_that_does_not_fit_the_key_type_is_rejected(ec_key: ECKey, keys: KeySet) -> None:
    token = mint(ec_key, "ES256", header={"alg": "ES256", "kid": "rsa-1"})
    with pytest.raises(IdTokenError):
        validate(token, keys)


def test_unknown_kid_raises_unknown_key_error(rsa_key_2: RSAKey, keys: KeySet) -> None:
    with pytest.raises(UnknownKeyError) as caught:
        validate(mint(rsa_key_2), keys)
    assert caught.value.reason.startswith("kid:")
    assert caught.value.code == "id_token_invalid"


def test_missing_kid_with_several_keys_is_rejected(rsa_key: RSAKey, keys: KeySet) -> None:
    with pytest.raises(UnknownKeyError):
        validate(mint(rsa_key, header={"kid": _DROP}), keys)


def test_encrypted_five_part_token_is_rejected(keys: KeySet) -> None:
    jwe = ".".join([b64json({"alg": "RSA-OAEP", "enc": "A256GCM"}), "a", "b", "c", "d"])
    with pytest.raises(IdTokenError) as caught:
        validate(jwe, keys)
    assert caught.value.reason.startswith("format:")


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "!!!.???.###", "e30.e30.", "..", "é.é.é"])
def test_garbage_is_rejected(garbage: str, keys: KeySet) -> None:
    with pytest.raises(IdTokenError):
        validate(garbage, keys)


def test_oversized_token_is_rejected_before_parsing(rsa_key: RSAKey, keys: KeySet) -> None:
    token = mint(rsa_key, padding="x" * MAX_ID_TOKEN_BYTES)
    with pytest.raises(IdTokenError) as caught:
        validate(token, keys)
    assert caught.value.reason.startswith("size:")


def test_reason_and_message_never_contain_the_token(rsa_key: RSAKey, keys: KeySet) -> None:
    token = mint(rsa_key, aud="other")
    with pytest.raises(IdTokenError) as caught:
        validate(token, keys)
    for part in token.split("."):
        assert part not in caught.value.reason and part not in caught.value.message


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_character_change_is_rejected(
    data: st.DataObject, rsa_key: RSAKey, keys: KeySet
) -> None:
    token = mint(rsa_key)
    # the last character of a segment may carry unused base64 bits, so it is left alone
    positions = [
        i for i, c in enumerate(token) if c != "." and i + 1 < len(token) and token[i + 1] != "."
    ][:-1]
    index = data.draw(st.sampled_from(positions))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    replacement = data.draw(st.sampled_from([c for c in alphabet if c != token[index]]))
    mutated = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(IdTokenError):
        validate(mutated, keys)


def test_token_kid_reads_the_header(rsa_key: RSAKey) -> None:
    assert token_kid(mint(rsa_key)) == "rsa-1"
    assert token_kid(mint(rsa_key, header={"kid": _DROP})) is None
    with pytest.raises(IdTokenError):
        token_kid("not a token")


# -- identity ---------------------------------------------------------------------------------


def test_build_identity_maps_default_claims() -> None:
    source = {
        "sub": "u1",
        "email": "ada@example.com",
        "email_verified": True,
        "preferred_username": "ada",
        "groups": ["admins", "devs"],
        "locale": "en",
    }
    identity = build_identity(source, ClaimsConfig())
    assert identity.sub == "u1" and identity.user == "u1"
    assert identity.email == "ada@example.com" and identity.email_verified is True
    assert identity.username == "ada"
    assert identity.groups == ("admins", "devs")
    assert identity.claims["locale"] == "en"


def test_build_identity_reads_groups_from_a_dotted_path() -> None:
    source = {"sub": "u1", "realm_access": {"roles": ["admin", 7]}}
    identity = build_identity(source, ClaimsConfig(groups="realm_access.roles"))
    assert identity.groups == ("admin", "7")


def test_build_identity_prefers_a_claim_whose_name_contains_dots() -> None:
    source = {"sub": "u1", "https://example.com/roles": ["ops"]}
    identity = build_identity(source, ClaimsConfig(groups="https://example.com/roles"))
    assert identity.groups == ("ops",)


@pytest.mark.parametrize(
    ("value", "groups"),
    [("one", ("one",)), (None, ()), ({"a": 1}, ()), ([], ()), (["a", None, True, "b"], ("a", "b"))],
)
def test_build_identity_groups_shapes(value: Any, groups: tuple[str, ...]) -> None:
    assert build_identity({"sub": "u", "groups": value}, ClaimsConfig()).groups == groups


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("FALSE", False), (1, None)],
)
def test_build_identity_email_verified_is_a_bool(value: Any, expected: bool | None) -> None:
    identity = build_identity({"sub": "u", "email_verified": value}, ClaimsConfig())
    assert identity.email_verified is expected


def test_build_identity_for_plain_oauth_uses_the_user_claim_as_subject() -> None:
    identity = build_identity(
        {"id": 4242, "login": "ada"}, ClaimsConfig(user="id", username="login")
    )
    assert identity.sub == "4242" and identity.user == "4242" and identity.username == "ada"


def test_build_identity_without_any_user_claim_fails() -> None:
    with pytest.raises(LoginError) as caught:
        build_identity({"email": "x@example.com"}, ClaimsConfig())
    assert caught.value.code == "identity_incomplete"


def test_userinfo_subject_must_match() -> None:
    check_userinfo_subject({"sub": "u1"}, {"sub": "u1", "email": "a@b"})
    for userinfo in ({"sub": "u2"}, {}):
        with pytest.raises(LoginError) as caught:
            check_userinfo_subject({"sub": "u1"}, userinfo)
        assert caught.value.code == "userinfo_invalid"


# -- token responses --------------------------------------------------------------------------


def test_parse_token_response_reads_every_field() -> None:
    parsed = parse_token_response(
        {
            "access_token": "at",
            "token_type": "bearer",
            "expires_in": "3600",
            "refresh_token": "rt",
            "id_token": "a.b.c",
            "scope": "openid",
        }
    )
    assert parsed == TokenResponse("at", "Bearer", 3600.0, "rt", "a.b.c", "openid")
    assert "at" not in repr(parsed).replace("Bearer", "").replace("TokenResponse", "")


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {},
        {"access_token": "", "token_type": "Bearer"},
        {"access_token": "at"},
        {"access_token": "at", "token_type": "DPoP"},
        {"access_token": "at", "token_type": "Bearer", "refresh_token": 5},
    ],
)
def test_parse_token_response_rejects_unusable_answers(doc: Any) -> None:
    with pytest.raises(TokenResponseError):
        parse_token_response(doc)


@pytest.mark.parametrize("expires_in", [-5, "soon", float("nan"), True, None])
def test_parse_token_response_ignores_a_meaningless_expires_in(expires_in: Any) -> None:
    doc = {"access_token": "at", "token_type": "Bearer", "expires_in": expires_in}
    assert parse_token_response(doc).expires_in is None


def test_access_token_expiry_from_expires_in() -> None:
    assert access_token_expiry(TokenResponse("at", expires_in=300), NOW) == NOW + 300


def test_access_token_expiry_from_a_jwt_access_token(rsa_key: RSAKey) -> None:
    access = mint(rsa_key, exp=int(NOW) + 900)
    assert access_token_expiry(TokenResponse(access), NOW) == NOW + 900


@pytest.mark.parametrize("access", ["opaque-token", "a.b.c", f"x.{b64json(['exp'])}.y"])
def test_access_token_expiry_unknown(access: str) -> None:
    assert access_token_expiry(TokenResponse(access), NOW) is None


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children)
    ),
    max_leaves=10,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "access_token": _JSON,
            "token_type": st.sampled_from(["Bearer", "bearer", "DPoP", "mac"]) | _JSON,
            "expires_in": _JSON,
            "refresh_token": _JSON,
            "id_token": _JSON,
            "scope": _JSON,
        },
    )
    | _JSON
)
def test_parse_token_response_never_fails_unexpectedly(doc: Any) -> None:
    try:
        parsed = parse_token_response(doc)
    except TokenResponseError:
        return
    assert isinstance(parsed.access_token, str) and parsed.access_token
    assert parsed.expires_in is None or parsed.expires_in >= 0
