"""Client authentication at the dev provider's token endpoint (pure)."""

from __future__ import annotations

import base64
from urllib.parse import quote_plus

import pytest

from sidecar.dev.provider_clients import ClientAuthError, DevClient, authenticate_client

CLIENTS = {
    "a:b c": DevClient("a:b c", "s/e:c r+t"),
    "post": DevClient("post", "pw", auth_method="client_secret_post"),
    "public": DevClient("public", auth_method="none"),
}


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def auth(authorization: str | None = None, **form: str) -> DevClient:
    return authenticate_client(
        authorization=authorization,
        form=form,
        clients=CLIENTS,
        audiences=["http://op/token"],
        now=0.0,
        seen_jtis={},
    )


def test_basic_credentials_are_form_urlencoded_per_rfc6749() -> None:
    assert auth(basic("a:b c", "s/e:c r+t")).client_id == "a:b c"


@pytest.mark.parametrize(
    ("authorization", "form", "message"),
    [
        (basic("a:b c", "wrong"), {}, "wrong client secret"),
        (basic("nobody", "x"), {}, "unknown client"),
        ("Basic !!!", {}, "malformed"),
        (None, {"client_id": "a:b c", "client_secret": "s/e:c r+t"}, "client_secret_basic"),
        (None, {"client_id": "post"}, "client_secret_post"),
        (None, {"client_assertion_type": "x", "client_assertion": "y"}, "client_assertion_type"),
    ],
)
def test_bad_client_authentication_is_refused(
    authorization: str | None, form: dict[str, str], message: str
) -> None:
    with pytest.raises(ClientAuthError, match=message):
        auth(authorization, **form)


def test_post_and_public_clients() -> None:
    assert auth(client_id="post", client_secret="pw").client_id == "post"
    assert auth(client_id="public").client_id == "public"


def test_repr_hides_the_secret() -> None:
    assert "s/e:c" not in repr(CLIENTS["a:b c"])
