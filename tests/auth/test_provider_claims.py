"""sidecar.auth.provider_claims: required_acr (pure). The Entra overage and GitHub steps run
end to end in tests/providers (test_entra_id.py, test_github.py) against replayed providers."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.auth.provider_claims import check_acr
from sidecar.errors import LoginError


@pytest.mark.parametrize(
    ("claims", "required", "allowed"),
    [
        ({"acr": "MFA"}, ("MFA",), True),
        ({"acr": "Login"}, ("MFA", "Login"), True),
        ({}, (), True),
        ({"acr": "Login"}, (), True),
        ({"acr": "Login"}, ("MFA",), False),
        ({}, ("MFA",), False),
        ({"acr": ["MFA"]}, ("MFA",), False),
        ({"acr": "mfa"}, ("MFA",), False),
    ],
)
def test_check_acr(claims: dict[str, Any], required: tuple[str, ...], allowed: bool) -> None:
    if allowed:
        check_acr(claims, required)
    else:
        with pytest.raises(LoginError) as caught:
            check_acr(claims, required)
        assert caught.value.code == "acr_not_satisfied"
        assert caught.value.status == 400


def test_check_acr_reason_is_short_and_safe() -> None:
    with pytest.raises(LoginError) as caught:
        check_acr({"acr": "x" * 500}, ("MFA",))
    assert len(caught.value.reason) < 120
