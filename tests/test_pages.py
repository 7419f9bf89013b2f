"""Error and sign-in pages: escaping, custom templates, and who gets JSON instead of a page."""

from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict

from sidecar.pages import (
    load_stylesheet,
    load_template,
    render_error,
    render_page,
    status_title,
    wants_json,
)


@pytest.mark.parametrize(
    ("headers", "method", "expected"),
    [
        ({}, "GET", False),
        ({"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}, "GET", False),
        ({"Accept": "application/json"}, "GET", True),
        ({"Accept": "application/problem+json"}, "GET", True),
        ({"Accept": "text/html;q=0.9, application/json"}, "GET", True),
        ({"Accept": "application/json;q=0.5, text/html"}, "GET", False),
        ({"Accept": "application/json;q=0"}, "GET", False),
        ({"accept": "APPLICATION/JSON"}, "GET", True),
        ({"X-Requested-With": "XMLHttpRequest"}, "GET", True),
        ({}, "POST", True),
        ({"Accept": "*/*"}, "DELETE", True),
        ({"Accept": "text/html"}, "POST", False),
        ({}, "HEAD", False),
        ({"Accept": "text/html;q=bogus"}, "PUT", True),
        ({"Authorization": "Bearer abc", "Accept": "*/*"}, "GET", True),
        ({"Authorization": "Basic YTpi"}, "GET", True),
        ({"Authorization": "Bearer abc", "Accept": "text/html"}, "GET", False),
    ],
)
def test_wants_json_tells_programs_from_browsers(
    headers: dict[str, str], method: str, expected: bool
) -> None:
    assert wants_json(CIMultiDict(headers), method) is expected


def test_render_error_shows_status_message_and_request_id() -> None:
    page = render_error(502, "upstream_unavailable", "Not reachable.", request_id="abc123")
    assert "<title>502 Bad Gateway</title>" in page
    assert "Not reachable." in page
    assert "abc123" in page
    assert "upstream_unavailable" in page
    assert 'href="/"' in page
    assert "http://" not in page and "https://" not in page  # self-contained: no external assets


def test_render_page_escapes_every_value() -> None:
    page = render_error(400, "bad_request", '<script>alert("x")</script>', request_id='"><img>')
    assert "<script>alert" not in page
    assert "&lt;script&gt;" in page
    assert '"><img>' not in page


def test_status_title_for_unknown_code() -> None:
    assert status_title(431) == "Request Header Fields Too Large"
    assert status_title(599) == "Error"


def test_custom_template_replaces_builtin_and_unknown_placeholders_stay(tmp_path: Path) -> None:
    (tmp_path / "error.html").write_text(
        "<h1>$status oops</h1><p>$message</p><p>$unknown_placeholder</p>", encoding="utf-8"
    )
    load_template.cache_clear()
    page = render_error(403, "forbidden", "No <entry>.", templates_dir=str(tmp_path))
    assert page == "<h1>403 oops</h1><p>No &lt;entry&gt;.</p><p>$unknown_placeholder</p>"


def test_templates_dir_without_the_file_falls_back_to_builtin(tmp_path: Path) -> None:
    page = render_page(
        "sign_in.html",
        templates_dir=str(tmp_path),
        provider_name="Example & Co",
        start_url="/oauth2/start?rd=%2Fa&x=1",
    )
    assert "Sign in with Example &amp; Co" in page
    assert 'href="/oauth2/start?rd=%2Fa&amp;x=1"' in page


@pytest.mark.parametrize(
    "name", ["error.html", "forbidden.html", "sign_in.html", "sign_in_failed.html", "sign_out.html"]
)
def test_builtin_pages_carry_the_shared_stylesheet(name: str) -> None:
    page = render_page(name)
    assert f"<style>{load_stylesheet()}</style>" in page
    assert "$style" not in page


def test_custom_template_without_style_renders_as_written(tmp_path: Path) -> None:
    (tmp_path / "sign_in.html").write_text(
        "<html><body><a href='$start_url'>Go, $provider_name</a></body></html>", encoding="utf-8"
    )
    page = render_page(
        "sign_in.html", templates_dir=str(tmp_path), provider_name="A&B", start_url="/s"
    )
    assert page == "<html><body><a href='/s'>Go, A&amp;B</a></body></html>"


def test_custom_template_may_use_the_shared_stylesheet(tmp_path: Path) -> None:
    (tmp_path / "error.html").write_text(
        "<style>$style main { color: red; }</style><h1>$title</h1>", encoding="utf-8"
    )
    page = render_error(404, "not_found", "Gone.", templates_dir=str(tmp_path))
    assert page == f"<style>{load_stylesheet()} main {{ color: red; }}</style><h1>Not Found</h1>"


def test_style_is_not_a_value_callers_can_set() -> None:
    with pytest.raises(ValueError, match="reserved"):
        render_page("error.html", style="</style><script>")
