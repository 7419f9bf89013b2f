"""The dev provider's key ring: current key published, retired kept, impostor never shown."""

from __future__ import annotations

from sidecar.dev.keys import SigningKeys


def test_jwks_publishes_only_the_current_public_key() -> None:
    keys = SigningKeys()
    (published,) = keys.public_jwks()["keys"]
    assert published["kid"] == keys.current_kid
    assert "d" not in published, "no private part"


def test_rotation_replaces_the_published_key_and_keeps_the_old_for_reading() -> None:
    keys = SigningKeys()
    old = keys.current_kid
    new = keys.rotate()
    assert new != old
    assert [key["kid"] for key in keys.public_jwks()["keys"]] == [new]
    assert {key.kid for key in keys.all_keys().keys} == {old, new}


def test_impostor_key_is_never_published() -> None:
    keys = SigningKeys()
    assert keys.impostor.kid not in {key.kid for key in keys.all_keys().keys}
    assert keys.impostor is keys.impostor
