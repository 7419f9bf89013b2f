"""Signing keys of the development OpenID provider: the published key ring and rotation.

`SigningKeys` holds the RSA key the provider signs with, publishes only current keys in the JWKS,
remembers retired keys (so the provider can still read its own older access tokens and
`id_token_hint`s), and keeps an unpublished "wrong" key for the signature fault knobs. Keys are
generated in memory with joserfc at construction; nothing touches disk.
"""

from __future__ import annotations

from typing import Any

from joserfc import jwk


def generate_rsa_key() -> jwk.RSAKey:
    """A fresh 2048-bit RS256 signing key whose kid is its RFC 7638 thumbprint."""
    return jwk.RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, auto_kid=True)


class SigningKeys:
    """The provider's key ring: one current signing key, retired keys, and an impostor key."""

    def __init__(self) -> None:
        self._current = generate_rsa_key()
        self._retired: list[jwk.RSAKey] = []
        self._impostor: jwk.RSAKey | None = None

    @property
    def current(self) -> jwk.RSAKey:
        return self._current

    @property
    def current_kid(self) -> str:
        kid = self._current.kid
        assert kid is not None
        return kid

    @property
    def impostor(self) -> jwk.RSAKey:
        """A key that is never published: tokens it signs must fail verification."""
        if self._impostor is None:
            self._impostor = generate_rsa_key()
        return self._impostor

    def rotate(self) -> str:
        """Start signing with a new key; the JWKS shows only the new one. Returns the new kid."""
        self._retired.append(self._current)
        self._current = generate_rsa_key()
        return self.current_kid

    def public_jwks(self, *, extra_key: bool = False) -> dict[str, Any]:
        """The JWKS document (public parts of the current key only; with `extra_key`, also the
        impostor's, as a provider publishing its next key ahead of a rotation does)."""
        keys = [self._current.as_dict(private=False)]
        if extra_key:
            keys.append(self.impostor.as_dict(private=False))
        return {"keys": keys}

    def all_keys(self) -> jwk.KeySet:
        """Current and retired keys, for the provider reading its own tokens."""
        return jwk.KeySet([self._current, *self._retired])

    def public_pem(self) -> bytes:
        """The current public key as PEM (what the HS256-with-public-key attack uses as secret)."""
        return self._current.as_pem(private=False)
