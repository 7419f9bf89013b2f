"""Signing keys for the oidc tests: generated once per test session (RSA generation is slow)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

Jwks = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})


@pytest.fixture(scope="session")
def rsa_key_2() -> RSAKey:
    """A second provider key (rotation), with its own kid."""
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})


@pytest.fixture(scope="session")
def attacker_key() -> RSAKey:
    """Not the provider's key, but claiming the provider key's kid."""
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})


@pytest.fixture(scope="session")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "ec-1"})


@pytest.fixture(scope="session")
def ed_key() -> OKPKey:
    return OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"})


@pytest.fixture(scope="session")
def public_jwks() -> Jwks:
    """`public_jwks(key, ...)`: the JWKS document a provider would publish for these keys."""

    def build(*keys: Key) -> dict[str, Any]:
        return {"keys": [dict(key.as_dict(private=False)) for key in keys]}

    return build
