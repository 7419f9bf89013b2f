"""GitHub sign-in: who the user is, read from GitHub's REST API (plain OAuth 2.0, no ID token).

GitHub has no discovery, no ID token and no userinfo endpoint in the OpenID sense. Sidecar reads
`GET /user` as the userinfo (`provider.userinfo_endpoint`), then, with `provider.github`
configured, `fetch_github_claims` adds the primary *verified* address from `/user/emails` (the
`/user` email is only the public one, often null), and organizations (`/user/orgs`) and teams
(`/user/teams`) as groups `org` and `org/team-slug`. `build_github_claims` is the pure part: it
keeps a small, stable claim set (`sub` is the numeric id; logins can be renamed). The access token
is only ever sent to `github.api_url`, also when following pagination links.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from sidecar.config.model import GitHubConfig
from sidecar.errors import LoginError
from sidecar.oidc.client import ProviderClient

API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
PAGE_SIZE = 100
MAX_PAGES = 10
_KEPT_USER_FIELDS = ("login", "id", "name", "avatar_url", "type")


def primary_verified_email(emails: Any) -> str | None:
    """The address marked both primary and verified in a `/user/emails` answer, if any."""
    if not isinstance(emails, list):
        return None
    for entry in emails:
        if (
            isinstance(entry, dict)
            and entry.get("primary") is True
            and entry.get("verified") is True
            and isinstance(entry.get("email"), str)
        ):
            return str(entry["email"])
    return None


def org_groups(orgs: Sequence[Any]) -> list[str]:
    """Organization logins from `/user/orgs`."""
    return [
        org["login"] for org in orgs if isinstance(org, dict) and isinstance(org.get("login"), str)
    ]


def team_groups(teams: Sequence[Any]) -> list[str]:
    """`org/team-slug` for each team from `/user/teams`."""
    groups: list[str] = []
    for team in teams:
        if not isinstance(team, dict):
            continue
        org = team.get("organization")
        login = org.get("login") if isinstance(org, dict) else None
        slug = team.get("slug")
        if isinstance(login, str) and isinstance(slug, str):
            groups.append(f"{login}/{slug}")
    return groups


def build_github_claims(
    user: Mapping[str, Any], *, email: str | None, groups: Sequence[str]
) -> dict[str, Any]:
    """The identity claims of a GitHub user: `sub` (the numeric id), login, name, the verified
    email (absent when there is none), groups. Raises `LoginError` without a usable id/login."""
    user_id = user.get("id")
    login = user.get("login")
    if isinstance(user_id, bool) or not isinstance(user_id, int) or not isinstance(login, str):
        raise LoginError(code="identity_incomplete", reason="GitHub /user has no id and login")
    claims: dict[str, Any] = {name: user[name] for name in _KEPT_USER_FIELDS if name in user}
    claims["sub"] = str(user_id)
    claims["preferred_username"] = login
    if email is not None:
        claims["email"] = email
        claims["email_verified"] = True
    claims["groups"] = list(dict.fromkeys(groups))
    return claims


def _same_api(url: str, api_url: str) -> bool:
    """True when `url` is under the configured API (the token must never go elsewhere)."""
    got, want = urlsplit(url), urlsplit(api_url)
    return (got.scheme, got.netloc) == (want.scheme, want.netloc) and got.path.startswith(
        want.path.rstrip("/") + "/"
    )


async def _get_all(client: ProviderClient, config: GitHubConfig, path: str, token: str) -> Any:
    """A list endpoint's items over its pages (at most MAX_PAGES), or the one JSON answer."""
    url: str | None = f"{config.api_url}{path}?per_page={PAGE_SIZE}"
    items: list[Any] = []
    pages = 0
    while url is not None and pages < MAX_PAGES:
        answer = await client.call_api(url, token, headers=API_HEADERS)
        if answer.status != 200:
            hint = (
                " (is the scope that allows it requested and granted?)"
                if answer.status
                in (
                    401,
                    403,
                    404,
                )
                else ""
            )
            raise LoginError(
                code="github_api_refused",
                reason=f"GitHub GET {path}: HTTP {answer.status}{hint}",
            )
        if not isinstance(answer.doc, list):
            return answer.doc
        items.extend(answer.doc)
        pages += 1
        url = answer.links.get("next")
        if url is not None and not _same_api(url, config.api_url):
            url = None
    return items


async def fetch_github_claims(
    client: ProviderClient, config: GitHubConfig, user: Mapping[str, Any], access_token: str
) -> dict[str, Any]:
    """The user's identity claims from `/user` (already read) plus emails, orgs and teams."""
    emails = await _get_all(client, config, "/user/emails", access_token)
    groups: list[str] = []
    if config.orgs:
        orgs = await _get_all(client, config, "/user/orgs", access_token)
        groups += org_groups(orgs if isinstance(orgs, list) else [])
    if config.teams:
        teams = await _get_all(client, config, "/user/teams", access_token)
        groups += team_groups(teams if isinstance(teams, list) else [])
    return build_github_claims(user, email=primary_verified_email(emails), groups=groups)
