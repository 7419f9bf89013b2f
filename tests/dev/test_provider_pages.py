"""The dev provider's pages: always marked NOT FOR PRODUCTION, always escaped."""

from __future__ import annotations

from sidecar.dev.provider_pages import render_error, render_login_form, render_signed_out


def test_login_form_carries_the_request_escaped() -> None:
    page = render_login_form(
        action="/authorize",
        client_id="<app>",
        request_params={"state": '"><b>x</b>', "client_id": "app"},
        default_name="<eve>",
    )
    assert "NOT FOR PRODUCTION" in page
    assert 'name="state" value="&quot;&gt;&lt;b&gt;x&lt;/b&gt;"' in page
    assert "&lt;app&gt;" in page
    assert 'value="&lt;eve&gt;"' in page
    assert "<b>x</b>" not in page
    assert 'name="username"' in page
    assert 'name="groups"' in page


def test_error_and_signed_out_pages_are_marked() -> None:
    error = render_error("Bad <thing>", "no <b>")
    assert "NOT FOR PRODUCTION" in error
    assert "Bad &lt;thing&gt;" in error
    assert "NOT FOR PRODUCTION" in render_signed_out()
