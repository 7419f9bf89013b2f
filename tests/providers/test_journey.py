"""Every provider's documented shape, end to end: sign in, refresh, sign out, identity headers.

One journey per guide configuration (docs/providers/<name>.md as written, only the values a user
changes replaced): the browser signs in through the replayed provider and lands on the echo
backend, which must see the identity headers the guide promises; the access token expires and
sidecar refreshes it once (where the provider issues refresh tokens); signing out ends the
session, and the provider's session too where it publishes an end_session_endpoint (otherwise the
next visit is signed in again by the provider without a new login).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from sidecar.dev.shapes import ProviderShape

from .conftest import ShapeStackFactory, entra_document_for, load, seen_headers

ENTRA_TENANT = "b9419818-09af-49c2-b0c3-653adc1f376e"
ENTRA_GROUPS = "0c8e1d4a-3f6b-4e2a-9d7c-5b1a2e3f4d6c,7a2b9c4d-1e5f-4a6b-8c3d-2e1f0a9b8c7d"
ACCESS_TOKEN_TTL = 300


@dataclass(frozen=True)
class Journey:
    guide: str
    headers: dict[str, str]
    variant: str | None = None
    shape: Callable[[], ProviderShape] | None = None
    refreshes: bool = True
    provider_logout: bool = True
    absent: tuple[str, ...] = ()
    user: dict[str, Any] = field(default_factory=dict)  # changes to the recorded user

    @property
    def id(self) -> str:
        return self.guide + (f"-{self.variant}" if self.variant else "")


JOURNEYS = [
    Journey(
        "keycloak",
        {
            "x-forwarded-user": "f1b3c0f4-6a8e-4f3b-9d2c-7e5a1b0c9d8e",
            "x-forwarded-email": "alice@example.com",
            "x-forwarded-preferred-username": "alice",
            "x-forwarded-groups": "default-roles-acme,offline_access,uma_authorization,app-admin",
            "x-forwarded-client-roles": "editor,viewer",
        },
    ),
    Journey(
        "okta",
        {
            "x-forwarded-user": "00uid4BxXw6I6TV4m0g3",
            "x-forwarded-email": "alice@example.com",
            "x-forwarded-preferred-username": "alice@example.com",
            "x-forwarded-groups": "Everyone,Engineering,sidecar-admins",
        },
    ),
    Journey(
        "auth0",
        {
            "x-forwarded-user": "auth0|64f1c3e2a7b9d0e1f2a3b4c5",
            "x-forwarded-email": "alice@example.com",
            "x-forwarded-groups": "admin,editor",
        },
    ),
    Journey(
        "google",
        {
            "x-forwarded-user": "10769150350006150715113082367",
            "x-forwarded-email": "jsmith@example.com",
        },
        provider_logout=False,
        absent=("x-forwarded-groups",),
    ),
    Journey(
        "entra-id",
        {
            "x-forwarded-user": "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ",
            "x-forwarded-email": "AbeLi@microsoft.com",
            "x-forwarded-preferred-username": "AbeLi@microsoft.com",
            "x-forwarded-groups": ENTRA_GROUPS,
            "x-forwarded-roles": "Sidecar.Admin",
            "x-forwarded-tenant": ENTRA_TENANT,
        },
        shape=lambda: entra_document_for(load("entra-id"), ENTRA_TENANT),
    ),
    Journey(
        "entra-id",
        {
            "x-forwarded-user": "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ",
            "x-forwarded-email": "AbeLi@microsoft.com",
            "x-forwarded-groups": ENTRA_GROUPS,
        },
        variant="multi-tenant",
        shape=lambda: entra_document_for(load("entra-id"), "organizations"),
    ),
    Journey(
        "entra-id",
        {
            "x-forwarded-user": "_W8Lp0OCjxOHaGAv3yTIo9rGQfqX7bnSFNMIiLhD1Fo",
            "x-forwarded-email": "AbeLi@microsoft.com",
            "x-forwarded-preferred-username": "AbeLi@microsoft.com",
            "x-forwarded-groups": "0c8e1d4a-3f6b-4e2a-9d7c-5b1a2e3f4d6c",
        },
        variant="v1",
        shape=lambda: load("entra-id-v1"),
    ),
    Journey(
        "forgerock",
        {
            "x-forwarded-user": "a0325ccb-3ad4-4d7b-9d5c-1e2a0c3f9e21",
            "x-forwarded-email": "alice@example.com",
            "x-forwarded-groups": "platform-admins",
            "x-forwarded-acr": "Login",
            "x-forwarded-amr": "pwd",
        },
    ),
    Journey(
        "forgerock",
        {"x-forwarded-user": "a0325ccb-3ad4-4d7b-9d5c-1e2a0c3f9e21"},
        variant="mfa",
        user={"acr": "MFA", "amr": ["pwd", "otp"]},
    ),
    Journey(
        "github",
        {
            "x-forwarded-user": "octocat",
            "x-forwarded-email": "octocat@github.com",
            "x-forwarded-preferred-username": "octocat",
            "x-forwarded-groups": "github,octo-org,github/justice-league",
        },
        refreshes=False,
        provider_logout=False,
    ),
]


@pytest.mark.parametrize("journey", JOURNEYS, ids=lambda journey: journey.id)
async def test_guide_config_signs_in_refreshes_and_signs_out(
    make_shape_stack: ShapeStackFactory, journey: Journey
) -> None:
    shape = journey.shape() if journey.shape else None
    user = {**(shape or load(journey.guide)).user, **journey.user}
    stack = await make_shape_stack(journey.guide, shape=shape, variant=journey.variant, user=user)
    browser = await stack.browser()

    # sign in: the backend sees the identity the guide promises
    hops = await stack.sign_in(browser)
    seen = seen_headers(hops[-1])
    for name, value in journey.headers.items():
        assert seen.get(name) == value, (name, seen.get(name))
    for name in journey.absent:
        assert name not in seen
    assert stack.provider.counters.logins == 1

    # the access token expires: one refresh (or none needed: tokens that never expire)
    stack.clock.advance(ACCESS_TOKEN_TTL + 1 if journey.refreshes else 2 * 3600)
    after = await browser.follow(stack.url("/echo"))
    assert after[-1].status == 200 and len(after) == 1, [(h.status, h.url) for h in after]
    assert stack.provider.counters.refreshes == (1 if journey.refreshes else 0)
    assert stack.provider.counters.logins == 1
    assert seen_headers(after[-1])["x-forwarded-user"] == journey.headers["x-forwarded-user"]

    # sign out: sidecar's session ends; the provider's only where it has end_session
    out = await browser.request(
        "POST",
        stack.url("/oauth2/sign_out"),
        headers={"Origin": stack.origin, "Sec-Fetch-Site": "same-origin"},
    )
    assert out.status == 303
    assert "_sidecar" not in browser.cookie_names()
    if journey.provider_logout:
        assert out.location.startswith(stack.provider.issuer)
        back = await browser.request("GET", out.location)
        assert back.status == 302 and back.location == stack.url("/")
        assert stack.provider.counters.end_session == 1
    else:
        assert out.location == "/"
        assert stack.provider.counters.end_session == 0

    # the next visit: a new login at the provider only if its session was ended
    again = await stack.sign_in(browser)
    assert seen_headers(again[-1])["x-forwarded-user"] == journey.headers["x-forwarded-user"]
    assert stack.provider.counters.logins == (2 if journey.provider_logout else 1)
