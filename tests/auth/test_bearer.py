"""Bearer JWT access tokens, checked without any server: a table of tokens that must be refused,
the ones that must pass, the Authorization parser (with hypothesis), and `BearerVerifier` picking
keys by issuer (a multi-tenant Entra provider's by the token's own tenant)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey
from support.claims import with_changes

from sidecar.auth.bearer import (
    BearerVerifier,
    TrustedIssuer,
    build_trusted_issuers,
    looks_like_jwt,
    parse_bearer,
    unverified_issuer,
    validate_access_token,
)
from sidecar.config.model import BearerConfig, ClaimsConfig, EntraConfig
from sidecar.errors import InvalidTokenError, ProviderUnavailableError

ISSUER = "https://idp.example.com"
AUDIENCE = "https://api.example.com"
NOW = 1_800_000_000
RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
EC = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
KEYS = KeySet([RSA, EC])
ALGORITHMS = BearerConfig().algorithms
_DROP = object()


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "svc-1",
        "aud": AUDIENCE,
        "iat": NOW - 10,
        "exp": NOW + 300,
        "client_id": "ci",
    }
    return with_changes(base, changes, drop=_DROP)


def mint(
    payload: Mapping[str, Any] | None = None,
    *,
    key: Any = RSA,
    header: Mapping[str, Any] | None = None,
) -> str:
    head = {"alg": "RS256" if isinstance(key, RSAKey) else "ES256", "kid": key.kid}
    head.update(header or {})
    return jwt.encode(head, dict(payload or claims()), key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def validate(token: str, *, audiences: tuple[str, ...] = (AUDIENCE,)) -> dict[str, Any]:
    return validate_access_token(
        token,
        keys=KEYS,
        issuer=ISSUER,
        audiences=audiences,
        now=NOW,
        leeway=60,
        algorithms=ALGORITHMS,
    )


@contextlib.contextmanager
def refused(reason: str) -> Iterator[None]:
    """Expect InvalidTokenError whose operator reason (not the user message) mentions `reason`."""
    with pytest.raises(InvalidTokenError) as caught:
        yield
    assert reason in caught.value.reason, caught.value.reason
    assert caught.value.message == InvalidTokenError.message


def test_valid_token_gives_its_claims() -> None:
    assert validate(mint())["sub"] == "svc-1"
    assert validate(mint(key=EC))["sub"] == "svc-1"


@pytest.mark.parametrize(
    "header", [{"typ": "at+jwt"}, {"typ": "application/at+JWT"}, {"typ": "JWT"}]
)
def test_access_token_types_are_accepted(header: dict[str, str]) -> None:
    assert validate(mint(header=header))["sub"] == "svc-1"


@pytest.mark.parametrize(
    ("payload", "audiences"),
    [
        (claims(aud=[AUDIENCE, "other"]), (AUDIENCE,)),
        (claims(aud="second"), ("first", "second")),
        (claims(exp=NOW - 30), (AUDIENCE,)),  # within the leeway
        (claims(iat=_DROP, nbf=NOW + 30), (AUDIENCE,)),
    ],
)
def test_edges_that_pass(payload: dict[str, Any], audiences: tuple[str, ...]) -> None:
    assert validate(mint(payload), audiences=audiences)


def _unsigned(alg: str) -> str:
    head = _b64(json.dumps({"alg": alg, "kid": RSA.kid}).encode())
    return f"{head}.{_b64(json.dumps(claims()).encode())}."


def _hs256_with_public_key() -> str:
    head = _b64(json.dumps({"alg": "HS256", "kid": RSA.kid}).encode())
    signing_input = f"{head}.{_b64(json.dumps(claims()).encode())}"
    mac = hmac.new(RSA.as_pem(private=False), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{_b64(mac.digest())}"


REFUSED = {
    "wrong audience": mint(claims(aud="https://other.example.com")),
    "audience list without ours": mint(claims(aud=["a", "b"])),
    "no audience": mint(claims(aud=_DROP)),
    "expired beyond leeway": mint(claims(exp=NOW - 61)),
    "no exp": mint(claims(exp=_DROP)),
    "not yet valid": mint(claims(nbf=NOW + 120)),
    "issued in the future": mint(claims(iat=NOW + 120)),
    "other issuer": mint(claims(iss="https://evil.example.com")),
    "no issuer": mint(claims(iss=_DROP)),
    "alg none": _unsigned("none"),
    "hs256 keyed with the public key": _hs256_with_public_key(),
    "signed by another key": mint(key=RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})),
    "unknown kid": mint(key=RSAKey.generate_key(2048, parameters={"kid": "who"})),
    "refresh-ish typ": mint(header={"typ": "refresh+jwt"}),
    "logout token typ": mint(header={"typ": "logout+jwt"}),
    "not a jws": "abc.def",
    "garbage": "a.b.c",
}


@pytest.mark.parametrize("token", REFUSED.values(), ids=REFUSED.keys())
def test_refused_tokens(token: str) -> None:
    with pytest.raises(InvalidTokenError) as caught:
        validate(token)
    assert caught.value.reason
    for part in token.split("."):
        assert len(part) < 4 or part not in caught.value.reason  # never the token itself


def test_tampered_claims_break_the_signature() -> None:
    head, _, signature = mint().split(".")
    forged = _b64(json.dumps(claims(sub="root")).encode())
    with refused("signature"):
        validate(f"{head}.{forged}.{signature}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer   token-123  ", "token-123"),
        ("BEARER a+b/c==", "a+b/c=="),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc", None),
        ("Bearer two words", None),
        ("Bearer tok\u00e9n", None),
        ("Bearer " + "a" * 70000, None),
    ],
)
def test_parse_bearer(value: str, expected: str | None) -> None:
    assert parse_bearer(value) == expected


_TOKEN68 = st.from_regex(r"[A-Za-z0-9\-._~+/]+=*", fullmatch=True)


@given(_TOKEN68)
def test_parse_bearer_round_trips_token68(token: str) -> None:
    assert parse_bearer(f"Bearer {token}") == token


@given(st.text(max_size=300))
def test_parse_bearer_and_unverified_issuer_never_crash(value: str) -> None:
    token = parse_bearer(value)
    assert token is None or " " not in token
    unverified_issuer(value)
    looks_like_jwt(value)


def test_unverified_issuer_reads_iss_only_to_choose_keys() -> None:
    assert unverified_issuer(mint()) == ISSUER
    assert unverified_issuer("opaque") is None
    assert unverified_issuer("a.!!!.c") is None
    assert unverified_issuer(f"a.{_b64(b'[1]')}.c") is None


# -- BearerVerifier ---------------------------------------------------------------------------


class FixedKeys:
    def __init__(self, keys: KeySet) -> None:
        self.keys = keys
        self.kids: list[str | None] = []

    async def __call__(self, kid: str | None) -> KeySet:
        self.kids.append(kid)
        return self.keys


def verifier(**issuers: TrustedIssuer) -> BearerVerifier:
    return BearerVerifier(
        BearerConfig(enabled=True, audiences=(AUDIENCE,)),
        issuers={issuer.issuer: issuer for issuer in issuers.values()},
        introspector=None,
        provider_claims=ClaimsConfig(),
        leeway=60,
        clock=lambda: NOW,
    )


async def test_verifier_uses_the_keys_of_the_token_issuer() -> None:
    provider_keys, other_keys = FixedKeys(KEYS), FixedKeys(KeySet([EC]))
    other = "https://ci.example.com"
    bearer = verifier(
        provider=TrustedIssuer(ISSUER, provider_keys, frozenset({AUDIENCE}), ClaimsConfig()),
        ci=TrustedIssuer(other, other_keys, frozenset({"ci-aud"}), ClaimsConfig(user="client_id")),
    )
    identity = await bearer.identity(mint())
    assert (identity.sub, identity.user) == ("svc-1", "svc-1")
    ci_token = mint(claims(iss=other, aud="ci-aud"), key=EC)
    assert (await bearer.identity(ci_token)).user == "ci"  # its own claim names
    assert provider_keys.kids == ["rsa-1"] and other_keys.kids == ["ec-1"]
    with refused("aud"):  # each issuer has its own audiences
        await bearer.identity(mint(claims(iss=other), key=EC))


async def test_verifier_refuses_unknown_issuers_and_opaque_tokens_without_introspection() -> None:
    bearer = verifier(
        provider=TrustedIssuer(ISSUER, FixedKeys(KEYS), frozenset({AUDIENCE}), ClaimsConfig())
    )
    with refused("iss: not a trusted issuer"):
        await bearer.identity(mint(claims(iss="https://stranger.example.com")))
    with refused("introspection is off"):
        await bearer.identity("an-opaque-token")


async def test_verifier_refuses_a_token_that_identifies_nobody() -> None:
    bearer = verifier(
        provider=TrustedIssuer(ISSUER, FixedKeys(KEYS), frozenset({AUDIENCE}), ClaimsConfig())
    )
    with refused("identify"):
        await bearer.identity(mint(claims(sub=_DROP)))


# -- a multi-tenant Entra provider --------------------------------------------------------------

TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"
COMMON = "https://login.microsoftonline.com/organizations/v2.0"  # what the config names
TENANT = "b9419818-09af-49c2-b0c3-653adc1f376e"
OTHER_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def tenant_issuer(tenant: str) -> str:
    return TEMPLATE.replace("{tenantid}", tenant)


def entra_claims(tenant: str = TENANT, **changes: Any) -> dict[str, Any]:
    return claims(**{"iss": tenant_issuer(tenant), "tid": tenant, **changes})


def multi_tenant(
    template: str | None = TEMPLATE, allowed: tuple[str, ...] = (TENANT,), **extra: TrustedIssuer
) -> BearerVerifier:
    """The verifier as `sidecar.auth.api_clients` builds it for `provider.entra.allowed_tenants`,
    once discovery found `template` (None: the provider turned out single-tenant)."""
    issuers = build_trusted_issuers(
        BearerConfig(enabled=True, audiences=(AUDIENCE,)),
        provider_issuer=COMMON,
        provider_keys=FixedKeys(KEYS),
        provider_claims=ClaimsConfig(),
        issuer_keys=(),
        provider_template=lambda: template,
        entra=EntraConfig(allowed_tenants=allowed),
    )
    issuers.update({each.issuer: each for each in extra.values()})
    return BearerVerifier(
        BearerConfig(enabled=True, audiences=(AUDIENCE,)),
        issuers=issuers,
        introspector=None,
        provider_claims=ClaimsConfig(),
        leeway=60,
        clock=lambda: NOW,
    )


async def test_multi_tenant_provider_accepts_a_token_of_an_allowed_tenant() -> None:
    identity = await multi_tenant().identity(mint(entra_claims()))
    assert identity.sub == "svc-1"
    upper = TENANT.upper()  # a tenant id is a GUID: its case does not matter for the allow-list
    assert (await multi_tenant().identity(mint(entra_claims(upper)))).sub == "svc-1"


async def test_multi_tenant_any_accepts_every_tenant() -> None:
    bearer = multi_tenant(allowed=("any",))
    assert (await bearer.identity(mint(entra_claims(OTHER_TENANT)))).sub == "svc-1"


MULTI_TENANT_REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "tenant not allowed": (entra_claims(OTHER_TENANT), f"tid: tenant {OTHER_TENANT} is not in"),
    "tid missing": (entra_claims(tid=_DROP), "tid: missing or not a tenant id"),
    "tid malformed": (entra_claims(tid="contoso"), "tid: missing or not a tenant id"),
    "tid not a string": (entra_claims(tid=7), "tid: missing or not a tenant id"),
    "iss of another tenant than tid": (
        entra_claims(iss=tenant_issuer(OTHER_TENANT)),
        "iss: not the issuer of the token's own tenant",
    ),
    "iss the configured common issuer": (
        entra_claims(iss=COMMON),
        "iss: not the issuer of the token's own tenant",
    ),
    "iss the template itself": (entra_claims(iss=TEMPLATE), "iss: not the issuer"),
    "iss not the template at all": (
        entra_claims(iss=f"https://evil.example.com/{TENANT}/v2.0"),
        "iss: not a trusted issuer",
    ),
    "iss on the v1 host": (
        entra_claims(iss=f"https://sts.windows.net/{TENANT}/"),
        "iss: not a trusted issuer",
    ),
    "iss missing": (entra_claims(iss=_DROP), "iss: not a trusted issuer"),
    "wrong audience": (entra_claims(aud="https://graph.microsoft.com"), "aud"),
}


@pytest.mark.parametrize(
    ("payload", "reason"), MULTI_TENANT_REFUSED.values(), ids=MULTI_TENANT_REFUSED.keys()
)
async def test_multi_tenant_provider_refuses(payload: dict[str, Any], reason: str) -> None:
    with refused(reason):
        await multi_tenant().identity(mint(payload))


async def test_multi_tenant_provider_without_allowed_tenants_refuses_every_tenant() -> None:
    with refused("is not in provider.entra.allowed_tenants"):
        await multi_tenant(allowed=()).identity(mint(entra_claims()))


async def test_provider_found_single_tenant_keeps_the_exact_issuer() -> None:
    bearer = multi_tenant(template=None)
    with refused("iss: not a trusted issuer"):
        await bearer.identity(mint(entra_claims()))
    assert (await bearer.identity(mint(entra_claims(iss=COMMON)))).sub == "svc-1"


async def test_a_trusted_issuer_named_exactly_wins_over_the_tenant_template() -> None:
    exact = TrustedIssuer(
        tenant_issuer(OTHER_TENANT), FixedKeys(KeySet([EC])), frozenset({"ci"}), ClaimsConfig()
    )
    bearer = multi_tenant(ci=exact)
    token = mint(entra_claims(OTHER_TENANT, aud="ci"), key=EC)
    assert (await bearer.identity(token)).sub == "svc-1"


async def test_multi_tenant_provider_before_discovery_is_unavailable_not_a_refusal() -> None:
    def not_discovered() -> str | None:
        raise ProviderUnavailableError(reason="provider not ready")

    issuers = build_trusted_issuers(
        BearerConfig(enabled=True, audiences=(AUDIENCE,)),
        provider_issuer=COMMON,
        provider_keys=FixedKeys(KEYS),
        provider_claims=ClaimsConfig(),
        issuer_keys=(),
        provider_template=not_discovered,
        entra=EntraConfig(allowed_tenants=(TENANT,)),
    )
    bearer = verifier(**issuers)
    with pytest.raises(ProviderUnavailableError):
        await bearer.identity(mint(entra_claims()))


def test_only_a_provider_with_entra_settings_looks_for_a_tenant_template() -> None:
    def build(entra: EntraConfig | None) -> TrustedIssuer:
        return build_trusted_issuers(
            BearerConfig(enabled=True, audiences=(AUDIENCE,)),
            provider_issuer=ISSUER,
            provider_keys=FixedKeys(KEYS),
            provider_claims=ClaimsConfig(),
            issuer_keys=(),
            provider_template=lambda: TEMPLATE,
            entra=entra,
        )[ISSUER]

    assert build(None).tenant_template is None
    assert build(EntraConfig()).tenant_template is not None
