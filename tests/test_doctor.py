"""`sidecar doctor` against the development provider, the echo backend and closed ports: each
misconfiguration it claims to detect is named, with a fix, and a good setup passes."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestServer
from support.redis_server import RedisServer

from sidecar.cli import main
from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient
from sidecar.doctor import Finding, check_clock, diagnose, exit_code, render_report
from sidecar.session.codec import generate_secret

CLIENT_ID = "doctor-tests"
CLIENT_SECRET = "client-secret-for-doctor-tests"
PUBLIC_URL = "https://app.example.com"
KEY = generate_secret()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def provider() -> AsyncIterator[DevProvider]:
    dev = DevProvider()
    await dev.start()
    dev.add_client(
        DevClient(CLIENT_ID, CLIENT_SECRET, redirect_uris=[PUBLIC_URL + "/oauth2/callback"])
    )
    yield dev
    await dev.stop()


Write = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path, provider: DevProvider, echo_server: TestServer) -> Write:
    """Write a good config, with sections or keys replaced by the keyword arguments."""

    def make(**changes: Any) -> Path:
        config: dict[str, Any] = {
            "version": 1,
            "server": {"public_url": PUBLIC_URL},
            "upstream": str(echo_server.make_url("")).rstrip("/"),
            "provider": {
                "issuer": provider.issuer,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
            "session": {"secret": KEY},
        }
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                merged = {**config[key], **value}
                config[key] = {name: v for name, v in merged.items() if v is not None}
            elif value is None:
                config.pop(key, None)
            else:
                config[key] = value
        path = tmp_path / "sidecar.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    return make


def by_title(findings: list[Finding], start: str) -> Finding:
    matches = [f for f in findings if f.title.startswith(start)]
    assert matches, [f.title for f in findings]
    return matches[0]


async def test_a_good_setup_passes_and_names_the_redirect_uri(write: Write) -> None:
    findings = await diagnose(write())
    assert [f for f in findings if f.status in ("fail", "warn")] == []
    assert exit_code(findings) == 0
    titles = [f.title for f in findings]
    for expected in (
        "configuration is valid",
        "provider reachable",
        "clock skew",
        "issuer matches",
        "discovery valid",
        "JWKS usable",
        "client credentials accepted",
        "redirect URI to register at the provider",
        "session.secrets[0] strength",
        "session cookie size",
    ):
        assert expected in titles
    assert by_title(findings, "redirect URI").detail == PUBLIC_URL + "/oauth2/callback"
    report = render_report(findings, source="sidecar.yaml")
    assert (
        "✓ redirect URI to register at the provider: https://app.example.com/oauth2/callback"
        in (report)
    )
    assert report.endswith("all checks passed, 0 warnings")
    assert CLIENT_SECRET not in report and KEY not in report


async def test_invalid_config_is_named_with_its_problems(write: Write) -> None:
    findings = await diagnose(write(upstream="ftp://nowhere"))
    assert [f.status for f in findings] == ["fail"]
    assert "upstream" in findings[0].detail and "check-config" in findings[0].fix


async def test_unreachable_provider(write: Write) -> None:
    findings = await diagnose(write(provider={"issuer": f"http://127.0.0.1:{closed_port()}"}))
    reachable = by_title(findings, "provider reachable")
    assert reachable.status == "fail" and "connection refused" in reachable.detail
    assert "issuer" in reachable.fix
    assert exit_code(findings) == 1


async def test_issuer_with_a_path_that_serves_no_discovery(
    write: Write, provider: DevProvider
) -> None:
    findings = await diagnose(write(provider={"issuer": provider.issuer + "/realms/main"}))
    discovery = by_title(findings, "discovery valid")
    assert discovery.status == "fail" and "HTTP 404" in discovery.detail
    assert ".well-known/openid-configuration" in discovery.fix


async def test_issuer_mismatch_names_the_issuer_to_configure(
    write: Write, provider: DevProvider
) -> None:
    provider.faults.discovery_wrong_issuer = True
    findings = await diagnose(write())
    mismatch = by_title(findings, "issuer matches")
    assert mismatch.status == "fail"
    assert f'provider.issuer is "{provider.issuer}"' in mismatch.detail
    assert "set provider.issuer to exactly" in mismatch.fix


async def test_jwks_without_a_key_for_the_allowed_algorithms(write: Write) -> None:
    findings = await diagnose(write(provider={"id_token_algorithms": ["ES256"]}))
    jwks = by_title(findings, "JWKS usable")
    assert jwks.status == "fail" and "RS256" in jwks.detail and "ES256" in jwks.detail
    assert "id_token_algorithms" in jwks.fix


async def test_wrong_client_secret(write: Write) -> None:
    findings = await diagnose(write(provider={"client_secret": "not-the-registered-secret"}))
    client = by_title(findings, "client credentials accepted")
    assert client.status == "fail" and CLIENT_ID in client.detail
    assert "secret" in client.fix


async def test_clock_skew_beyond_the_allowed_leeway(write: Write) -> None:
    findings = await diagnose(write(), clock=lambda: time.time() + 3600)
    skew = by_title(findings, "clock skew")
    assert skew.status == "fail" and "ahead of the provider" in skew.detail
    assert "NTP" in skew.fix


def test_clock_within_the_leeway_and_without_a_date() -> None:
    date = "Sat, 28 Nov 2026 08:00:00 GMT"
    at = 1_795_852_800.0  # that instant
    assert check_clock(date, at + 30, 60).status == "ok"
    assert check_clock(date, at - 61, 60).status == "fail"
    assert check_clock(None, at, 60).status == "skip"


async def test_missing_public_url_is_a_warning_with_the_uri_to_expect(write: Write) -> None:
    findings = await diagnose(write(server={"public_url": None, "listen": "0.0.0.0:4180"}))
    redirect = by_title(findings, "redirect URI")
    assert redirect.status == "warn"
    assert "http://localhost:4180/oauth2/callback" in redirect.detail
    assert "server.public_url" in redirect.fix
    assert exit_code(findings) == 0  # a warning does not fail the run


async def test_weak_passphrase_secret_is_flagged_and_a_generated_key_is_not(write: Write) -> None:
    weak = "correct horse battery staple, really"
    findings = await diagnose(write(session={"secret": None, "secrets": [KEY, weak]}))
    assert by_title(findings, "session.secrets[0]").status == "ok"
    flagged = by_title(findings, "session.secrets[1]")
    assert flagged.status == "warn" and "sidecar secret" in flagged.fix
    assert weak not in render_report(findings, source="x")


async def test_cookie_size_warns_when_a_session_needs_several_cookies(write: Write) -> None:
    findings = await diagnose(write(session={"max_cookie_bytes": 1000}))
    size = by_title(findings, "session cookie size")
    assert size.status == "warn" and "cookie(s)" in size.detail and "keep_tokens" in size.fix
    lean = await diagnose(
        write(
            session={
                "keep_tokens": {"access_token": False, "refresh_token": False, "id_token": False}
            }
        )
    )
    assert by_title(lean, "session cookie size").status == "ok"
    assert "1 cookie(s)" in by_title(lean, "session cookie size").detail


async def test_cookie_size_over_the_header_limit_fails(write: Write) -> None:
    findings = await diagnose(write(server={"max_header_bytes": 1024}))
    size = by_title(findings, "session cookie size")
    assert size.status == "fail" and "max_header_bytes" in size.detail


async def test_unreachable_upstream(write: Write) -> None:
    findings = await diagnose(write(upstream=f"http://127.0.0.1:{closed_port()}"))
    upstream = by_title(findings, "upstream / ->")
    assert upstream.status == "fail" and "connection refused" in upstream.detail
    assert exit_code(findings) == 1


async def test_reachable_upstream_answers_head(write: Write) -> None:
    findings = await diagnose(write())
    upstream = by_title(findings, "upstream / ->")
    assert upstream.status == "ok" and "HTTP 200" in upstream.detail


def test_cli_prints_the_report_and_exits_1_on_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(
        yaml.safe_dump({"version": 1, "upstream": f"http://127.0.0.1:{closed_port()}"}),
        encoding="utf-8",
    )
    assert main(["doctor", "-c", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"sidecar doctor: {path}")
    assert "✓ configuration is valid" in out
    assert "- identity provider: none configured" in out
    assert "✗ upstream / -> http://127.0.0.1:" in out and "    fix: start the backend" in out
    assert out.rstrip().endswith("1 problem, 0 warnings")


async def test_unreachable_redis(write: Write) -> None:
    findings = await diagnose(
        write(session={"store": "redis", "redis": {"url": f"redis://127.0.0.1:{closed_port()}/0"}})
    )
    store = by_title(findings, "session store reachable")
    assert store.status == "fail" and "unreachable" in store.detail
    assert "session.redis" in store.fix
    assert by_title(findings, "session cookie size").status == "skip"


async def test_reachable_redis(write: Write, redis_server: RedisServer) -> None:
    findings = await diagnose(write(session={"store": "redis", "redis": {"url": redis_server.url}}))
    assert by_title(findings, "session store reachable").status == "ok"
