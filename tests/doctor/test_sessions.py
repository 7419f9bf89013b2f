"""The session estimates: weak secrets are flagged (never printed) and oversized sessions are
caught before a proxy refuses their cookies."""

from __future__ import annotations

from sidecar.doctor import diagnose
from sidecar.doctor.report import render_report

from .conftest import KEY, Write, by_title


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
