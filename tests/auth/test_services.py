"""The provider operations of AuthServices against the dev provider: refresh and ID tokens."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sidecar.errors import IdTokenError, ProviderUnavailableError, RefreshRejectedError
from sidecar.session.model import Session, Tokens

from .conftest import Stack, StackFactory


async def signed_in_session(stack: Stack) -> Session:
    browser = await stack.browser()
    await stack.sign_in(browser)
    session = await stack.services.store.load(browser.cookies(), now=stack.clock())
    assert session is not None
    return session


async def test_refresh_session_replaces_the_tokens(make_stack: StackFactory) -> None:
    stack = await make_stack(provider_options={"access_token_ttl": 120})
    session = await signed_in_session(stack)
    stack.clock.advance(100)
    refreshed = await stack.services.refresh_session(session)
    assert refreshed.id == session.id
    assert refreshed.identity == session.identity
    assert refreshed.tokens.access_token != session.tokens.access_token
    assert refreshed.tokens.refresh_token != session.tokens.refresh_token  # rotated
    assert refreshed.tokens.id_token != session.tokens.id_token
    assert refreshed.tokens.expires_at == stack.clock() + 120


async def test_refresh_session_keeps_a_refresh_token_the_provider_does_not_rotate(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(provider_options={"rotate_refresh_tokens": False})
    session = await signed_in_session(stack)
    refreshed = await stack.services.refresh_session(session)
    assert refreshed.tokens.refresh_token == session.tokens.refresh_token


async def test_refreshed_id_token_that_fails_validation_ends_the_session(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    session = await signed_in_session(stack)
    stack.provider.faults.wrong_audience = True
    with pytest.raises(RefreshRejectedError):
        await stack.services.refresh_session(session)


async def test_refresh_without_a_refresh_token_is_rejected(make_stack: StackFactory) -> None:
    stack = await make_stack()
    session = await signed_in_session(stack)
    with pytest.raises(RefreshRejectedError):
        await stack.services.refresh_session(replace(session, tokens=Tokens(access_token="x")))


async def test_refresh_while_the_provider_is_down_is_unavailable_not_rejected(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    session = await signed_in_session(stack)
    stack.provider.faults.token_status_500 = True
    with pytest.raises(ProviderUnavailableError):
        await stack.services.refresh_session(session)


async def test_validate_id_token_checks_the_nonce(make_stack: StackFactory) -> None:
    stack = await make_stack()
    session = await signed_in_session(stack)
    token = session.tokens.id_token
    assert token is not None
    with pytest.raises(IdTokenError):
        await stack.services.validate_id_token(token, nonce="not-the-attempts-nonce")
    claims = await stack.services.validate_id_token(token, nonce=None, expected_sub="alice")
    assert claims["sub"] == "alice"
