"""ForgeRock / PingAM quirks against its replayed shape: the realm path in the issuer, acr and
amr as headers, required_acr, and a claim whose name contains dots."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from .conftest import ShapeStackFactory, load, seen_headers


async def test_mfa_variant_asks_for_the_journey_and_refuses_another(
    make_shape_stack: ShapeStackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await make_shape_stack("forgerock", variant="mfa")  # the recorded acr is Login
    browser = await stack.browser()
    hops = await browser.follow(stack.url("/echo"))
    authorize = parse_qs(urlsplit(hops[1].url).query)
    assert authorize["acr_values"] == ["MFA"]
    assert hops[-1].status == 400
    assert "acr_not_satisfied" in hops[-1].text
    assert "_sidecar" not in browser.cookie_names()
    reasons = [
        getattr(r, "detail", "") for r in caplog.records if r.getMessage() == "sign in failed"
    ]
    assert reasons == ["ID token acr 'Login' is not one of provider.required_acr"]


async def test_claim_name_with_dots_is_read_by_its_exact_name(
    make_shape_stack: ShapeStackFactory,
) -> None:
    def ops_header(data: dict[str, Any]) -> None:
        data["headers"]["claims"]["X-Ops"] = "org.forgerock.openidconnect.ops"
        data["headers"]["claims"]["X-Realm"] = "realm"

    stack = await make_shape_stack("forgerock", edit=ops_header)
    browser = await stack.browser()
    hops = await stack.sign_in(browser)
    seen = seen_headers(hops[-1])
    assert seen["x-ops"] == load("forgerock").user["org.forgerock.openidconnect.ops"]
    assert seen["x-realm"] == "/alpha"


async def test_issuer_keeps_the_realm_path(make_shape_stack: ShapeStackFactory) -> None:
    stack = await make_shape_stack("forgerock")
    metadata = stack.services.require_directory().metadata()
    realm = stack.provider.issuer + "/am/oauth2/realms/root/realms/alpha"
    assert metadata.issuer == realm
    assert metadata.token_endpoint == realm + "/access_token"
    assert metadata.end_session_endpoint == realm + "/connect/endSession"
