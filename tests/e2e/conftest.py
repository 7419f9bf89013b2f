"""Fixtures of the end-to-end tests: a real OpenID provider (node `oidc-provider`) and Chromium.

`oidc_provider` (session): installs the committed npm lock file when node_modules is missing or
stale, runs `provider.mjs` on a free port of 127.0.0.1 and yields a `harness.RunningProvider`.
`browser` (session): Playwright driving the Debian `/usr/bin/chromium` (never `playwright install`).
`page`: a page in a fresh browser context (no cookies) per test. `servers`: starts aiohttp apps
on 127.0.0.1, optionally on a socket bound in advance (`harness.Servers`).

Every e2e test module sets `pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope=
"session")]`: the browser lives in the session's event loop, so the tests and every async fixture
they use (all here have `loop_scope="session"`) run in that loop. pytest-aiohttp's `aiohttp_server`
and `aiohttp_client` belong to a per-test loop: use `servers` and `aiohttp.ClientSession` here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from harness import (
    CHROMIUM_FLAGS,
    PAGE_TIMEOUT_MS,
    RunningProvider,
    Servers,
    find_chromium,
    missing_tool,
    start_provider,
    stop_process,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProvider]:
    """One real oidc-provider for the whole test session (its state is in memory)."""
    provider = start_provider(tmp_path_factory.mktemp("oidc-provider") / "provider.log")
    try:
        yield provider
    finally:
        stop_process(provider.process)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium driven by Playwright (never `playwright install`)."""
    executable = find_chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        missing_tool("the Python package playwright is not installed (pip install -e '.[test]')")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS)
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page in a fresh browser context: no cookies from other tests."""
    context = await browser.new_context()
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield await context.new_page()
    finally:
        await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def servers() -> AsyncIterator[Servers]:
    """Serve aiohttp apps on 127.0.0.1 in the session loop; all stopped after the test."""
    running = Servers()
    try:
        yield running
    finally:
        await running.close()
