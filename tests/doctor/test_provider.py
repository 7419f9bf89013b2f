"""The provider checks against the development provider and closed ports: each misconfiguration
they claim to detect is named, with a fix."""

from __future__ import annotations

import time

from sidecar.dev.provider import DevProvider
from sidecar.doctor import diagnose
from sidecar.doctor.provider import check_clock
from sidecar.doctor.report import exit_code

from .conftest import CLIENT_ID, Write, by_title, closed_port


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
