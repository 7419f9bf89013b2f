"""sidecar.oidc.entra: multi-tenant issuer templates, tenant allow-lists, the groups overage."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sidecar.config.model import EntraConfig
from sidecar.errors import IdTokenError
from sidecar.oidc.entra import (
    build_member_groups_request,
    check_tenant_template,
    expected_issuer,
    fits_tenant_template,
    has_groups_overage,
    is_tenant_template,
    parse_member_groups,
    read_unverified_claims,
    without_overage_markers,
)

TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"
TENANT = "b9419818-09af-49c2-b0c3-653adc1f376e"
OTHER = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        (TEMPLATE, True),
        ("https://sts.windows.net/{tenantid}/", True),
        (f"https://login.microsoftonline.com/{TENANT}/v2.0", False),
        (None, False),
        (42, False),
    ],
)
def test_is_tenant_template(issuer: Any, expected: bool) -> None:
    assert is_tenant_template(issuer) is expected


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        (f"https://login.microsoftonline.com/{TENANT}/v2.0", True),
        ("https://login.microsoftonline.com/organizations/v2.0", True),  # shape only: not a tid
        ("https://login.microsoftonline.com//v2.0", False),
        (f"https://login.microsoftonline.com/{TENANT}/v2.0/", False),
        (f"https://sts.windows.net/{TENANT}/", False),
        ("https://evil.example/v2.0", False),
    ],
)
def test_fits_tenant_template_is_the_shape_of_the_issuer(issuer: str, expected: bool) -> None:
    assert fits_tenant_template(TEMPLATE, issuer) is expected


def test_check_tenant_template_requires_an_explicit_allow_list() -> None:
    assert "configure provider.entra.allowed_tenants" in str(check_tenant_template(TEMPLATE, None))
    assert "is empty" in str(check_tenant_template(TEMPLATE, EntraConfig()))
    assert check_tenant_template(TEMPLATE, EntraConfig(allowed_tenants=(TENANT,))) is None
    assert check_tenant_template(TEMPLATE, EntraConfig(allowed_tenants=("any",))) is None
    twice = "https://{tenantid}.example/{tenantid}"
    assert "more than one" in str(
        check_tenant_template(twice, EntraConfig(allowed_tenants=("any",)))
    )


@pytest.mark.parametrize(
    ("allowed", "claims", "result"),
    [
        ((TENANT,), {"tid": TENANT}, f"https://login.microsoftonline.com/{TENANT}/v2.0"),
        (
            (TENANT,),
            {"tid": TENANT.upper()},
            f"https://login.microsoftonline.com/{TENANT.upper()}/v2.0",
        ),
        (("any",), {"tid": OTHER}, f"https://login.microsoftonline.com/{OTHER}/v2.0"),
        ((TENANT,), {"tid": OTHER}, "tid: tenant"),
        ((TENANT,), {}, "tid: missing"),
        (("any",), {"tid": "contoso.onmicrosoft.com"}, "tid: missing"),
        # spoofing rows: a tid that would bend the issuer URL
        (("any",), {"tid": f"{TENANT}/../{OTHER}"}, "tid: missing"),
        (("any",), {"tid": ["a"]}, "tid: missing"),
    ],
)
def test_expected_issuer(allowed: tuple[str, ...], claims: dict[str, Any], result: str) -> None:
    config = EntraConfig(allowed_tenants=allowed)
    if result.startswith("https://"):
        assert expected_issuer(TEMPLATE, claims, config) == result
    else:
        with pytest.raises(IdTokenError) as caught:
            expected_issuer(TEMPLATE, claims, config)
        assert caught.value.reason.startswith(result)


def test_expected_issuer_without_config_refuses() -> None:
    with pytest.raises(IdTokenError):
        expected_issuer(TEMPLATE, {"tid": TENANT}, None)


@given(st.uuids(), st.lists(st.uuids(), max_size=3))
def test_expected_issuer_never_admits_an_unlisted_tenant(
    tid: uuid.UUID, allowed: list[uuid.UUID]
) -> None:
    config = EntraConfig(allowed_tenants=tuple(dict.fromkeys(str(t) for t in allowed)))
    if str(tid) in config.allowed_tenants:
        assert str(tid) in expected_issuer(TEMPLATE, {"tid": str(tid)}, config)
    else:
        with pytest.raises(IdTokenError):
            expected_issuer(TEMPLATE, {"tid": str(tid)}, config)


@given(st.text(max_size=200))
def test_read_unverified_claims_never_raises(token: str) -> None:
    assert isinstance(read_unverified_claims(token), dict)


def test_read_unverified_claims_of_garbage_is_empty() -> None:
    assert read_unverified_claims("not a token") == {}
    assert read_unverified_claims("a.!!!.c") == {}


def test_read_unverified_claims_reads_a_payload() -> None:
    token = "eyJhbGciOiJub25lIn0.eyJ0aWQiOiJ4In0.sig"
    assert read_unverified_claims(token) == {"tid": "x"}


@pytest.mark.parametrize(
    ("claims", "overage"),
    [
        ({"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {}}}, True),
        ({"hasgroups": True}, True),
        ({"hasgroups": "true"}, True),
        ({"_claim_names": {"roles": "src1"}}, False),
        ({"_claim_names": "groups"}, False),
        ({"groups": ["a"]}, False),
        ({"hasgroups": False}, False),
    ],
)
def test_has_groups_overage(claims: dict[str, Any], overage: bool) -> None:
    assert has_groups_overage(claims) is overage


def test_without_overage_markers() -> None:
    claims = {"sub": "x", "_claim_names": {}, "_claim_sources": {}, "hasgroups": True}
    assert without_overage_markers(claims) == {"sub": "x"}


def test_build_member_groups_request() -> None:
    config = EntraConfig(graph_url="https://graph.microsoft.us/", graph_security_groups_only=False)
    assert build_member_groups_request(config) == (
        "https://graph.microsoft.us/v1.0/me/getMemberGroups",
        {"securityEnabledOnly": False},
    )


@pytest.mark.parametrize(
    ("doc", "groups"),
    [
        ({"value": ["a", "b"]}, ("a", "b")),
        ({"@odata.context": "x", "value": []}, ()),
        ({"value": "a"}, None),
        ({"value": [1]}, None),
        ([], None),
        ({"value": ["g"] * 5001}, None),
    ],
)
def test_parse_member_groups(doc: Any, groups: tuple[str, ...] | None) -> None:
    if groups is None:
        with pytest.raises(ValueError):
            parse_member_groups(doc)
    else:
        assert parse_member_groups(doc) == groups


@pytest.mark.parametrize(
    "tenants",
    [["any", TENANT], ["contoso.com"], [TENANT, TENANT.upper()], [""]],
)
def test_entra_config_refuses_bad_allow_lists(tenants: list[str]) -> None:
    with pytest.raises(ValidationError):
        EntraConfig(allowed_tenants=tuple(tenants))


def test_entra_config_defaults_are_the_safe_ones() -> None:
    config = EntraConfig()
    assert config.allowed_tenants == ()
    assert config.groups_overage == "deny"
    assert EntraConfig(allowed_tenants=(TENANT.upper(),)).allowed_tenants == (TENANT,)
