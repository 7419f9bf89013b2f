"""Keycloak quirks against its replayed shape: realm roles as groups for policies, client roles
by path, and the RFC 9207 `iss` Keycloak adds to its authorization responses."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from .conftest import ShapeStackFactory, load, seen_headers


def admins_policy(data: dict[str, Any]) -> None:
    """The guide's policy snippet, added to its config."""
    data["policies"] = {"admins": {"groups_any": ["app-admin"]}}
    data["routes"] = [{"path": "/admin", "policy": "admins"}]


@pytest.mark.parametrize(("roles", "status"), [(["app-admin"], 200), (["viewer"], 403)])
async def test_realm_role_policy(
    make_shape_stack: ShapeStackFactory, roles: list[str], status: int
) -> None:
    user = {**load("keycloak").user, "realm_access": {"roles": roles}}
    stack = await make_shape_stack("keycloak", user=user, edit=admins_policy)
    browser = await stack.browser()
    await stack.sign_in(browser)  # everything outside /admin only needs sign-in
    hops = await browser.follow(stack.url("/admin/echo"))
    assert hops[-1].status == status


async def test_callback_carries_iss_and_a_wrong_one_is_refused(
    make_shape_stack: ShapeStackFactory,
) -> None:
    stack = await make_shape_stack("keycloak")
    browser = await stack.browser()
    hops = await stack.sign_in(browser)
    callback = next(hop for hop in hops if urlsplit(hop.url).path == "/oauth2/callback")
    assert parse_qs(urlsplit(callback.url).query)["iss"] == [stack.provider.issuer + "/realms/acme"]
    stack.provider.faults.callback_wrong_issuer = True
    other = await stack.browser()
    refused = await other.follow(stack.url("/echo"))
    assert refused[-1].status == 400
    assert "issuer_mismatch" in refused[-1].text


async def test_client_roles_of_another_client_are_not_sent(
    make_shape_stack: ShapeStackFactory,
) -> None:
    user = {**load("keycloak").user, "resource_access": {"account": {"roles": ["view-profile"]}}}
    stack = await make_shape_stack("keycloak", user=user)
    browser = await stack.browser()
    hops = await stack.sign_in(browser)
    assert "x-forwarded-client-roles" not in seen_headers(hops[-1])
