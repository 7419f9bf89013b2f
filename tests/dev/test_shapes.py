"""sidecar.dev.shapes: loading the recorded provider shapes and replaying them faithfully."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from sidecar.dev.shapes import (
    COMMENT_KEY,
    ProviderShape,
    load_shape,
    rewrite_url,
)

FIXTURES = Path(__file__).resolve().parents[1] / "providers" / "fixtures"
NAMES = sorted(path.name for path in FIXTURES.iterdir())
ORIGIN = "http://127.0.0.1:8999"


def shape(name: str) -> ProviderShape:
    return load_shape(FIXTURES / name)


def test_every_provider_has_a_fixture_set() -> None:
    assert NAMES == [
        "auth0", "entra-id", "entra-id-v1", "forgerock", "github", "google", "keycloak", "okta"
    ]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_every_fixture_file_says_which_documented_shape_it_follows(name: str) -> None:
    for path in sorted((FIXTURES / name).glob("*.json")):
        doc: Any = json.loads(path.read_text())
        first = doc[0] if isinstance(doc, list) else doc
        assert isinstance(first.get(COMMENT_KEY), str) and len(first[COMMENT_KEY]) > 40, path


@pytest.mark.parametrize("name", NAMES)
def test_replayed_discovery_points_only_at_the_fake(name: str) -> None:
    loaded = shape(name)
    if loaded.discovery is None:
        assert loaded.endpoints
        return
    document = loaded.build_discovery(ORIGIN)
    assert COMMENT_KEY not in document
    text = json.dumps(document)
    hosts = {urlsplit(url).netloc for url in _urls(document)}
    assert hosts == {"127.0.0.1:8999"}, text
    assert document["issuer"].startswith(ORIGIN)


def _urls(value: Any) -> list[str]:
    if isinstance(value, str) and value.startswith("http"):
        return [value]
    if isinstance(value, dict):
        return [url for item in value.values() for url in _urls(item)]
    if isinstance(value, list):
        return [url for item in value for url in _urls(item)]
    return []


@pytest.mark.parametrize("name", NAMES)
def test_routes_need_no_path_twice(name: str) -> None:
    loaded = shape(name)
    routes = loaded.new_routes({})
    assert len({path for path, _ in routes}) == len(routes)
    assert {"authorization_endpoint", "token_endpoint"} <= {role for _, role in routes}


def test_conflicting_roles_are_refused() -> None:
    with pytest.raises(ValueError, match="is token_endpoint and"):
        shape("google").new_routes({"/token": "userinfo_endpoint"})


@pytest.mark.parametrize(
    ("name", "issuer"),
    [
        ("keycloak", ORIGIN + "/realms/acme"),
        ("okta", ORIGIN + "/oauth2/default"),
        ("auth0", ORIGIN + "/"),
        ("google", ORIGIN),
        ("entra-id", ORIGIN + "/common/v2.0"),
        ("entra-id-v1", ORIGIN + "/b9419818-09af-49c2-b0c3-653adc1f376e/"),
        ("forgerock", ORIGIN + "/am/oauth2/realms/root/realms/alpha"),
        ("github", None),
    ],
)
def test_configured_issuer_keeps_each_providers_format(name: str, issuer: str | None) -> None:
    assert shape(name).configured_issuer(ORIGIN) == issuer


def test_entra_token_issuer_names_the_users_tenant() -> None:
    entra = shape("entra-id")
    assert entra.token_issuer(ORIGIN, {"tid": "t-1"}) == ORIGIN + "/t-1/v2.0"


def test_user_is_the_recording_without_per_token_claims() -> None:
    user = shape("google").user
    assert user["hd"] == "example.com"
    assert not {"iss", "aud", "exp", "iat", "nonce", "at_hash", "azp"} & set(user)
    assert shape("github").user["sub"] == "1"  # GitHub has no sub: its id stands in


def test_build_id_token_claims_keeps_only_the_protocol_claims_the_provider_sends() -> None:
    base = {"iss": ORIGIN, "aud": "c", "azp": "c", "iat": 10, "exp": 20, "sid": "s", "nonce": "n"}
    base["auth_time"] = 5
    entra = shape("entra-id")
    claims = entra.build_id_token_claims(base, entra.user, frozenset({"openid"}), ORIGIN)
    assert "azp" not in claims and "sid" not in claims and "auth_time" not in claims
    assert claims["nbf"] == 10 and claims["nonce"] == "n"
    assert claims["iss"] == ORIGIN + "/b9419818-09af-49c2-b0c3-653adc1f376e/v2.0"
    faulty = entra.build_id_token_claims(
        {**base, "iss": "https://x"}, entra.user, frozenset(), ORIGIN
    )
    assert faulty["iss"] == "https://x"  # a wrong-issuer fault survives the shape


def test_release_and_userinfo_follow_the_scope() -> None:
    okta = shape("okta")
    assert "groups" in okta.release(okta.user, frozenset({"openid", "groups"}))
    assert "groups" not in okta.release(okta.user, frozenset({"openid"}))
    body = okta.build_userinfo(okta.user, frozenset({"openid"}))
    assert "groups" not in body and body["locale"] == "en-US"


def test_userinfo_leaves_out_a_field_the_user_lost() -> None:
    google = shape("google")
    user = {k: v for k, v in google.user.items() if k != "hd"}
    assert "hd" not in google.build_userinfo(user, frozenset({"openid"}))


@pytest.mark.parametrize(
    ("name", "scopes", "params", "issues"),
    [
        ("google", {"openid"}, {}, False),
        ("google", {"openid"}, {"access_type": "offline"}, False),
        ("google", {"openid"}, {"access_type": "offline", "prompt": "consent"}, True),
        ("okta", {"openid"}, {}, False),
        ("okta", {"openid", "offline_access"}, {}, True),
        ("keycloak", {"openid"}, {}, True),
        ("github", set(), {}, False),
    ],
)
def test_issues_refresh_token(
    name: str, scopes: set[str], params: dict[str, str], issues: bool
) -> None:
    assert shape(name).issues_refresh_token(frozenset(scopes), params) is issues


def test_token_response_shapes() -> None:
    body = {"access_token": "a.b.c", "token_type": "Bearer", "expires_in": 300, "id_token": "x"}
    github = shape("github").build_token_response(body)
    assert "id_token" not in github and "expires_in" not in github
    assert github["token_type"] == "bearer"
    assert github["access_token"].startswith("gho_") and "." not in github["access_token"]
    assert shape("github").unwrap_access_token(github["access_token"]) == "a.b.c"
    assert shape("google").build_token_response(body) == body


def test_auth0_audience_becomes_the_access_token_audience() -> None:
    auth0 = shape("auth0")
    assert auth0.access_token_audience({"audience": "https://api"}, ORIGIN) == [
        "https://api",
        ORIGIN + "/userinfo",
    ]
    assert auth0.access_token_audience({}, ORIGIN) is None
    assert shape("okta").access_token_audience({"audience": "https://api"}, ORIGIN) is None


def test_rewrite_url_keeps_path_and_query() -> None:
    assert rewrite_url("https://a.example/x/y?q=1", ORIGIN + "/") == ORIGIN + "/x/y?q=1"
    assert rewrite_url("https://a.example", ORIGIN) == ORIGIN


def test_load_shape_refuses_a_template_issuer_without_discovery_url(tmp_path: Path) -> None:
    entra = FIXTURES / "entra-id"
    for name in ("discovery.json", "id_token_claims.json", "userinfo.json"):
        (tmp_path / name).write_text((entra / name).read_text())
    spec = json.loads((entra / "shape.json").read_text())
    del spec["discovery_url"], spec["api"]
    (tmp_path / "shape.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="needs discovery_url"):
        load_shape(tmp_path)


def test_a_shape_is_plain_data() -> None:
    google = shape("google")
    assert replace(google, rotate_refresh_tokens=True).rotate_refresh_tokens
