"""decide() as tables: public and default routes, each policy rule kind, the AND across kinds, and
the spoofing rows (case, look-alike letters, domain suffix tricks, unverified email, groups as a
string, nested claims, type confusion). Plus the policy configuration errors a user sees."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config.load import parse_config_text
from sidecar.config.model import ClaimsConfig, PolicyConfig
from sidecar.errors import ConfigError
from sidecar.oidc.tokens import build_identity
from sidecar.policy import Decision, Policy, decide
from sidecar.routing import DEFAULT_ROUTE, Route
from sidecar.session.model import Identity

BASE = """\
version: 1
upstream: http://127.0.0.1:9000
provider:
  issuer: https://id.example.com
  client_id: sidecar
  client_secret: not-a-real-secret
session:
  secret: 0123456789abcdef0123456789abcdef
"""


def person(
    email: str | None = "alice@example.com",
    *,
    verified: bool | None = True,
    groups: tuple[str, ...] = (),
    **claims: Any,
) -> Identity:
    return Identity(
        sub="u1",
        user="u1",
        email=email,
        email_verified=verified,
        groups=groups,
        claims={"sub": "u1", **claims},
    )


def policy_route(name: str = "p", **rules: Any) -> Route:
    policy = Policy.from_config(name, PolicyConfig.model_validate(rules))
    return Route(name="r", access="policy", policy=policy, kind="prefix", pattern="/")


def outcome(route: Route, identity: Identity | None) -> str:
    return decide(route, identity, authenticated_via="session").outcome


# -- routes without policies ----------------------------------------------------------------------


def test_public_route_is_public_for_everyone() -> None:
    route = Route(name="static", access="public")
    assert decide(route, None, authenticated_via="session") == Decision("public", ("public-route",))
    assert decide(route, person(), authenticated_via="session").outcome == "public"


def test_default_route_needs_someone_signed_in() -> None:
    assert decide(DEFAULT_ROUTE, None, authenticated_via="session") == Decision(
        "unauthenticated", ("user-unauthenticated",)
    )
    assert decide(DEFAULT_ROUTE, person(verified=False), authenticated_via="bearer") == Decision(
        "allow", ("user-authenticated", "via:bearer")
    )


def test_policy_route_without_identity_is_unauthenticated_not_forbidden() -> None:
    route = policy_route(groups_any=["admins"])
    assert decide(route, None, authenticated_via="session") == Decision(
        "unauthenticated", ("user-unauthenticated",)
    )


def test_decision_allowed_property() -> None:
    assert Decision("public", ()).allowed and Decision("allow", ()).allowed
    assert not Decision("forbidden", ()).allowed
    assert not Decision("unauthenticated", ()).allowed


# -- emails and domains ------------------------------------------------------------------------

EMAIL_RULES = {"emails": ["Boss@Example.com"], "email_domains": ["example.com", ".corp.example"]}


@pytest.mark.parametrize(
    ("email", "verified", "expected", "reason"),
    [
        ("boss@example.com", True, "allow", "policy:p:email-ok"),
        ("BOSS@EXAMPLE.COM", True, "allow", "policy:p:email-ok"),
        ("alice@example.com", True, "allow", "policy:p:email_domains-ok"),
        ("Alice@EXAMPLE.com", True, "allow", "policy:p:email_domains-ok"),
        ("bob@eu.corp.example", True, "allow", "policy:p:email_domains-ok"),
        ("bob@a.b.corp.example", True, "allow", "policy:p:email_domains-ok"),
        # the leading dot is for subdomains only
        ("bob@corp.example", True, "forbidden", "policy:p:email-unauthorized"),
        # domain suffix and prefix tricks
        ("eve@evil-example.com", True, "forbidden", "policy:p:email-unauthorized"),
        ("eve@evilexample.com", True, "forbidden", "policy:p:email-unauthorized"),
        ("eve@sub.example.com", True, "forbidden", "policy:p:email-unauthorized"),
        ("eve@example.com.evil.net", True, "forbidden", "policy:p:email-unauthorized"),
        ("eve@example.com@evil.net", True, "forbidden", "policy:p:email-unauthorized"),
        ("eve@evil.net?@example.com", True, "allow", "policy:p:email_domains-ok"),
        ("eve@xcorp.example", True, "forbidden", "policy:p:email-unauthorized"),
        ("example.com", True, "forbidden", "policy:p:email-unauthorized"),
        ("@example.com", True, "forbidden", "policy:p:email-unauthorized"),
        ("eve@example.com ", True, "forbidden", "policy:p:email-unauthorized"),
        ("eve@example.com.", True, "forbidden", "policy:p:email-unauthorized"),
        # look-alike letters are not folded: KELVIN SIGN, dotless i, fullwidth letters
        ("\u212aate@example.co\u212a", True, "forbidden", "policy:p:email-unauthorized"),
        ("boss@examp\u0131e.com", True, "forbidden", "policy:p:email-unauthorized"),
        ("boss@\uff45xample.com", True, "forbidden", "policy:p:email-unauthorized"),
        # only a verified email counts
        ("boss@example.com", False, "forbidden", "policy:p:email-not-verified"),
        ("alice@example.com", None, "forbidden", "policy:p:email-not-verified"),
        ("eve@evil.net", False, "forbidden", "policy:p:email-unauthorized"),
        (None, True, "forbidden", "policy:p:email-missing"),
        ("", True, "forbidden", "policy:p:email-missing"),
    ],
)
def test_email_rule(email: str | None, verified: bool | None, expected: str, reason: str) -> None:
    decision = decide(
        policy_route(**EMAIL_RULES), person(email, verified=verified), authenticated_via="session"
    )
    assert decision.outcome == expected
    assert reason in decision.reasons


def test_email_verified_can_be_waived_per_policy() -> None:
    route = policy_route(email_domains=["example.com"], require_email_verified=False)
    assert outcome(route, person("a@example.com", verified=None)) == "allow"
    assert outcome(route, person("a@example.com", verified=False)) == "allow"
    assert outcome(route, person("a@evil.com", verified=True)) == "forbidden"


def test_any_domain_star_means_any_verified_email() -> None:
    route = policy_route(email_domains=["*"])
    assert outcome(route, person("x@anything.example")) == "allow"
    assert outcome(route, person("x@anything.example", verified=False)) == "forbidden"
    assert outcome(route, person(None)) == "forbidden"


def test_email_verified_sent_as_string_by_the_provider_counts_once_parsed() -> None:
    claims = {"sub": "u1", "email": "a@example.com", "email_verified": "true"}
    identity = build_identity(claims, ClaimsConfig())
    assert outcome(policy_route(email_domains=["example.com"]), identity) == "allow"
    claims["email_verified"] = "yes"  # not a boolean: not verified
    identity = build_identity(claims, ClaimsConfig())
    assert outcome(policy_route(email_domains=["example.com"]), identity) == "forbidden"


# -- groups ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "any_ok", "all_ok"),
    [
        (("admins", "ops"), True, True),
        (("ops", "admins", "staff"), True, True),
        (("admins",), True, False),
        (("ops",), True, False),
        ((), False, False),
        (("staff",), False, False),
        # exact names: no case folding, no substrings, no comma-joined strings
        (("Admins",), False, False),
        (("administrators",), False, False),
        (("admin",), False, False),
        (("admins,ops",), False, False),
        (("admins ",), False, False),
    ],
)
def test_groups_any_and_all(groups: tuple[str, ...], any_ok: bool, all_ok: bool) -> None:
    identity = person(groups=groups)
    any_route = policy_route(groups_any=["admins", "ops"])
    all_route = policy_route(groups_all=["admins", "ops"])
    assert outcome(any_route, identity) == ("allow" if any_ok else "forbidden")
    assert outcome(all_route, identity) == ("allow" if all_ok else "forbidden")


@pytest.mark.parametrize(
    ("groups_claim", "expected"),
    [
        (["admins", "staff"], "allow"),
        ("admins", "allow"),  # a provider sending one group as a string
        ("admins,staff", "forbidden"),  # never split: the provider meant one odd group name
        ("admins staff", "forbidden"),
        ({"admins": True}, "forbidden"),
        ([["admins"]], "forbidden"),
        (None, "forbidden"),
    ],
)
def test_groups_claim_shapes_as_the_provider_sends_them(groups_claim: Any, expected: str) -> None:
    identity = build_identity({"sub": "u1", "groups": groups_claim}, ClaimsConfig())
    assert outcome(policy_route(groups_any=["admins"]), identity) == expected


def test_groups_reasons_name_the_failed_rule() -> None:
    route = policy_route("admins", groups_any=["admins"], groups_all=["mfa"])
    decision = decide(route, person(groups=("staff",)), authenticated_via="session")
    assert decision == Decision(
        "forbidden",
        (
            "user-unauthorized",
            "via:session",
            "policy:admins:groups_any-missing",
            "policy:admins:groups_all-missing",
        ),
    )
    decision = decide(route, person(groups=("admins", "mfa")), authenticated_via="session")
    assert decision == Decision(
        "allow",
        (
            "user-authorized",
            "via:session",
            "policy:admins:groups_any-ok",
            "policy:admins:groups_all-ok",
        ),
    )


# -- claims ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "expected", "reason"),
    [
        ({"realm_access": {"roles": ["admin", "user"]}}, "allow", "claim:realm_access.roles-ok"),
        ({"realm_access": {"roles": "admin"}}, "allow", "claim:realm_access.roles-ok"),
        (
            {"realm_access": {"roles": ["user"]}},
            "forbidden",
            "claim:realm_access.roles-unauthorized",
        ),
        (
            {"realm_access": {"roles": ["Admin"]}},
            "forbidden",
            "claim:realm_access.roles-unauthorized",
        ),
        (
            {"realm_access": {"roles": "admin,user"}},
            "forbidden",
            "claim:realm_access.roles-unauthorized",
        ),
        (
            {"realm_access": {"roles": [["admin"]]}},
            "forbidden",
            "claim:realm_access.roles-unauthorized",
        ),
        (
            {"realm_access": {"roles": {"admin": True}}},
            "forbidden",
            "claim:realm_access.roles-unauthorized",
        ),
        ({"realm_access": ["admin"]}, "forbidden", "claim:realm_access.roles-missing"),
        ({"realm_access": "admin"}, "forbidden", "claim:realm_access.roles-missing"),
        ({}, "forbidden", "claim:realm_access.roles-missing"),
        # a flat claim literally named with the dots wins over the nested path
        ({"realm_access.roles": ["admin"]}, "allow", "claim:realm_access.roles-ok"),
    ],
)
def test_nested_claim_rule(claims: dict[str, Any], expected: str, reason: str) -> None:
    route = policy_route("kc", claims={"realm_access.roles": ["admin"]})
    decision = decide(route, person(**claims), authenticated_via="session")
    assert decision.outcome == expected
    assert f"policy:kc:{reason}" in decision.reasons


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, "allow"),
        ("3", "forbidden"),
        (3.0, "forbidden"),
        (True, "forbidden"),  # True == 1 in Python; never here
        ("eng", "allow"),
        (["ops", "eng"], "allow"),
        ("ENG", "forbidden"),
        (True, "forbidden"),
    ],
)
def test_claim_values_compare_by_type_and_value(value: Any, expected: str) -> None:
    route = policy_route(claims={"level": [3, "eng"]})
    assert outcome(route, person(level=value)) == expected


def test_boolean_claim_values() -> None:
    route = policy_route(claims={"mfa": [True]})
    assert outcome(route, person(mfa=True)) == "allow"
    assert outcome(route, person(mfa="true")) == "forbidden"
    assert outcome(route, person(mfa=1)) == "forbidden"
    assert outcome(route, person(mfa=False)) == "forbidden"


def test_every_claims_entry_must_hold() -> None:
    route = policy_route(claims={"department": ["eng"], "realm_access.roles": ["admin"]})
    both = person(department="eng", realm_access={"roles": ["admin"]})
    one = person(department="eng", realm_access={"roles": ["user"]})
    assert outcome(route, both) == "allow"
    decision = decide(route, one, authenticated_via="session")
    assert decision.reasons == (
        "user-unauthorized",
        "via:session",
        "policy:p:claim:realm_access.roles-unauthorized",
    )


# -- AND across rule kinds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (person("a@example.com", groups=("admins",)), "allow"),
        (person("a@example.com", groups=("staff",)), "forbidden"),
        (person("a@evil.com", groups=("admins",)), "forbidden"),
        (person("a@example.com", verified=False, groups=("admins",)), "forbidden"),
        (person(None, groups=("admins",)), "forbidden"),
    ],
)
def test_every_listed_rule_kind_must_be_satisfied(identity: Identity, expected: str) -> None:
    route = policy_route(email_domains=["example.com"], groups_any=["admins"])
    assert outcome(route, identity) == expected


def test_groups_only_policy_does_not_look_at_email_at_all() -> None:
    route = policy_route(groups_any=["admins"])
    assert outcome(route, person(None, verified=None, groups=("admins",))) == "allow"
    assert outcome(route, person("x@evil.com", verified=False, groups=("admins",))) == "allow"


_groups = st.frozensets(st.sampled_from(["admins", "ops", "staff", "mfa"]))
_rules = st.fixed_dictionaries(
    {},
    optional={
        "email_domains": st.sampled_from([["example.com"], [".example.com"], ["*"]]),
        "emails": st.sampled_from([["a@example.com"], ["b@x.example.com"]]),
        "groups_any": _groups.filter(bool).map(sorted),
        "groups_all": _groups.filter(bool).map(sorted),
        "claims": st.sampled_from([{"dept": ["eng"]}, {"dept": ["ops", "eng"]}]),
    },
)
_people = st.builds(
    person,
    st.sampled_from(["a@example.com", "b@x.example.com", "c@evil.com", None]),
    verified=st.sampled_from([True, False, None]),
    groups=_groups.map(tuple),
    dept=st.sampled_from(["eng", "ops", "sales", None]),
)


@given(_rules, _rules, _people)
def test_adding_a_rule_kind_never_widens_a_policy(
    base: dict[str, Any], extra: dict[str, Any], who: Identity
) -> None:
    if not base:
        return
    if {"emails", "email_domains"} & set(base):
        # emails and email_domains are one rule: more addresses or domains widen it, by design
        extra = {k: v for k, v in extra.items() if k not in ("emails", "email_domains")}
    merged = {**extra, **base}  # base plus the rule kinds only `extra` lists
    narrow = outcome(policy_route(**merged), who)
    wide = outcome(policy_route(**base), who)
    if narrow == "allow":
        assert wide == "allow"


@given(_rules, _people)
def test_someone_satisfying_no_rule_is_denied(rules: dict[str, Any], who: Identity) -> None:
    if not rules:
        return
    route = policy_route(**rules)
    decision = decide(route, who, authenticated_via="session")
    if decision.outcome == "forbidden":
        assert decision.reasons[0] == "user-unauthorized"
        assert len(decision.reasons) > 2  # at least one failed rule is named
    else:
        assert all(reason.endswith("-ok") for reason in decision.reasons[2:])


# -- configuration --------------------------------------------------------------------------------


def problems(yaml_tail: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config_text(BASE + yaml_tail, source="sidecar.yaml")
    return info.value.problems


def test_policy_errors_are_reported_with_lines() -> None:
    found = problems(
        """\
policies:
  empty: {}
  domains:
    email_domains: ["*.example.com"]
  at:
    email_domains: ["@example.com"]
  bad:
    email_domains: ["exa mple.com"]
  emails:
    emails: [not-an-email]
  dupes:
    groups_any: [admins, admins]
  claim_email:
    claims: {email: [a@example.com]}
  no_values:
    claims: {dept: []}
  "bad:name":
    groups_any: [x]
  typo:
    group_any: [x]
"""
    )
    assert found == [
        "sidecar.yaml:10: policies.empty: a policy needs at least one rule: emails, "
        "email_domains, groups_any, groups_all or claims",
        "sidecar.yaml:12: policies.domains.email_domains: '*.example.com': write '.example.com'",
        "sidecar.yaml:14: policies.at.email_domains: '@example.com': write 'example.com'",
        "sidecar.yaml:16: policies.bad.email_domains: 'exa mple.com' is not a domain "
        "(example.com, .example.com for subdomains, or *)",
        "sidecar.yaml:18: policies.emails.emails: 'not-an-email' is not an email address",
        "sidecar.yaml:20: policies.dupes.groups_any: 'admins' is listed twice",
        "sidecar.yaml:22: policies.claim_email.claims: use emails / email_domains for the email: "
        "they also require email_verified",
        "sidecar.yaml:24: policies.no_values.claims: dept: list at least one allowed value",
        "sidecar.yaml:25: policies.bad:name: policy names use letters, digits, _ . and - only",
        "sidecar.yaml:28: policies.typo.group_any: unknown key",
    ]


def test_claim_values_keep_their_yaml_types() -> None:
    config = parse_config_text(
        BASE + "policies:\n  p:\n    claims: {level: [3, '3', true, eng]}\n",
        source="sidecar.yaml",
    )
    assert config.policies["p"].claims["level"] == (3, "3", True, "eng")
    assert [type(v) for v in config.policies["p"].claims["level"]] == [int, str, bool, str]


def test_policies_without_routes_are_fine() -> None:
    config = parse_config_text(
        BASE + "policies:\n  p:\n    groups_any: [a]\n", source="sidecar.yaml"
    )
    assert list(config.policies) == ["p"]
