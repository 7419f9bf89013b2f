"""sidecar.oidc.github: the identity of a GitHub user from its REST API answers.

The pure parts are table-driven; `fetch_github_claims` runs against a real aiohttp server on
127.0.0.1 that answers like api.github.com, pagination (Link headers) included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config.model import GitHubConfig, ProviderConfig
from sidecar.errors import LoginError
from sidecar.oidc.client import ProviderClient
from sidecar.oidc.discovery import ProviderDirectory
from sidecar.oidc.github import (
    _same_api,
    build_github_claims,
    fetch_github_claims,
    org_groups,
    primary_verified_email,
    team_groups,
)

OCTOCAT = {"login": "octocat", "id": 1, "name": "monalisa octocat", "email": None, "bio": "..."}


@pytest.mark.parametrize(
    ("emails", "expected"),
    [
        ([{"email": "a@x", "primary": True, "verified": True}], "a@x"),
        ([{"email": "a@x", "primary": True, "verified": False}], None),
        ([{"email": "a@x", "primary": False, "verified": True}], None),
        (
            [
                {"email": "old@x", "primary": False, "verified": True},
                {"email": "a@x", "primary": True, "verified": True},
            ],
            "a@x",
        ),
        ([{"email": "a@x", "primary": "true", "verified": "true"}], None),
        ({"message": "Not Found"}, None),
        ([], None),
    ],
)
def test_primary_verified_email(emails: Any, expected: str | None) -> None:
    assert primary_verified_email(emails) == expected


def test_org_and_team_groups() -> None:
    assert org_groups([{"login": "github"}, {"id": 3}, "x"]) == ["github"]
    teams = [
        {"slug": "justice-league", "organization": {"login": "github"}},
        {"slug": "orphan"},
        {"slug": 5, "organization": {"login": "github"}},
    ]
    assert team_groups(teams) == ["github/justice-league"]


def test_build_github_claims_keeps_a_small_stable_identity() -> None:
    claims = build_github_claims(OCTOCAT, email="octocat@github.com", groups=["a", "a/b", "a"])
    assert claims == {
        "login": "octocat",
        "id": 1,
        "name": "monalisa octocat",
        "sub": "1",
        "preferred_username": "octocat",
        "email": "octocat@github.com",
        "email_verified": True,
        "groups": ["a", "a/b"],
    }
    assert "email" not in build_github_claims(OCTOCAT, email=None, groups=[])


@pytest.mark.parametrize("user", [{"login": "x"}, {"id": 1}, {"id": True, "login": "x"}])
def test_build_github_claims_needs_id_and_login(user: dict[str, Any]) -> None:
    with pytest.raises(LoginError):
        build_github_claims(user, email=None, groups=[])


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("https://api.github.com/user/orgs?page=2", True),
        ("https://ghe.example.com/api/v3/user/orgs?page=2", False),
        # spoofing rows: the token must never leave the API
        ("https://api.github.com.evil.test/user/orgs", False),
        ("http://api.github.com/user/orgs", False),
        ("https://evil.test/https://api.github.com/user", False),
        ("https://api.github.com@evil.test/user", False),
    ],
)
def test_same_api(url: str, same: bool) -> None:
    assert _same_api(url, "https://api.github.com") is same


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-@:/", max_size=40), st.text(max_size=20)
)
def test_same_api_never_accepts_another_host(host: str, path: str) -> None:
    url = f"https://{host}/{path}"
    if _same_api(url, "https://api.github.com"):
        assert url.startswith("https://api.github.com/")


def test_same_api_respects_the_enterprise_path() -> None:
    assert _same_api("https://ghe.example.com/api/v3/user", "https://ghe.example.com/api/v3")
    assert not _same_api("https://ghe.example.com/api/v3x/user", "https://ghe.example.com/api/v3")
    assert not _same_api("https://ghe.example.com/other", "https://ghe.example.com/api/v3")


class FakeGitHub:
    """Answers like api.github.com: two pages of orgs, teams, emails; records what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.next_link: str | None = None
        self.emails_status = 200

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/user/emails", self.emails)
        app.router.add_get("/user/orgs", self.orgs)
        app.router.add_get("/user/teams", self.teams)
        return app

    def _record(self, request: web.Request) -> None:
        self.seen.append((request.path_qs, request.headers.get("Authorization")))

    async def emails(self, request: web.Request) -> web.Response:
        self._record(request)
        if self.emails_status != 200:
            return web.json_response({"message": "Not Found"}, status=self.emails_status)
        return web.json_response([{"email": "o@x", "primary": True, "verified": True}])

    async def orgs(self, request: web.Request) -> web.Response:
        self._record(request)
        if request.query.get("page") == "2":
            return web.json_response([{"login": "second"}])
        link = self.next_link or str(request.url.with_query({"per_page": "100", "page": "2"}))
        return web.json_response([{"login": "first"}], headers={"Link": f'<{link}>; rel="next"'})

    async def teams(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response([{"slug": "t", "organization": {"login": "first"}}])


@pytest.fixture
async def github(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[tuple[FakeGitHub, ProviderClient, GitHubConfig]]:
    fake = FakeGitHub()
    server = await aiohttp_server(fake.app())
    api_url = str(server.make_url("")).rstrip("/")
    config = ProviderConfig(
        discovery=False,
        authorization_endpoint=api_url + "/login/oauth/authorize",
        token_endpoint=api_url + "/login/oauth/access_token",
        userinfo_endpoint=api_url + "/user",
        client_id="id",
        client_secret="secret",  # type: ignore[arg-type]
        scopes=("read:user",),
    )
    async with aiohttp.ClientSession() as http:
        directory = ProviderDirectory(config, http, clock=lambda: 0.0)
        yield (
            fake,
            ProviderClient(config, directory, http, clock=lambda: 0.0),
            GitHubConfig(api_url=api_url),
        )


async def test_fetch_github_claims_follows_pages_and_sends_the_token_only_to_the_api(
    github: tuple[FakeGitHub, ProviderClient, GitHubConfig],
) -> None:
    fake, client, config = github
    claims = await fetch_github_claims(client, config, OCTOCAT, "gho_token")
    assert claims["email"] == "o@x"
    assert claims["groups"] == ["first", "second", "first/t"]
    assert {auth for _, auth in fake.seen} == {"Bearer gho_token"}
    assert [path for path, _ in fake.seen] == [
        "/user/emails?per_page=100",
        "/user/orgs?per_page=100",
        "/user/orgs?per_page=100&page=2",
        "/user/teams?per_page=100",
    ]


async def test_fetch_github_claims_ignores_a_next_link_off_the_api(
    github: tuple[FakeGitHub, ProviderClient, GitHubConfig],
) -> None:
    fake, client, config = github
    fake.next_link = "https://evil.test/user/orgs?page=2"
    claims = await fetch_github_claims(client, config, OCTOCAT, "gho_token")
    assert claims["groups"] == ["first", "first/t"]


async def test_fetch_github_claims_refused_scope_is_a_login_error(
    github: tuple[FakeGitHub, ProviderClient, GitHubConfig],
) -> None:
    fake, client, config = github
    fake.emails_status = 404
    with pytest.raises(LoginError) as caught:
        await fetch_github_claims(client, config, OCTOCAT, "gho_token")
    assert caught.value.code == "github_api_refused"
    assert "GET /user/emails: HTTP 404" in caught.value.reason
    assert "gho_token" not in caught.value.reason
