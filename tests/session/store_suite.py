"""One behavioural suite for every session store, seen through what a browser keeps and sends.

`StoreSuite` is a test class without a store: `tests/session/test_store.py` runs it over the
cookie store and `tests/session/test_store_redis.py` over the Redis store, each by subclassing it
and providing a `kit` fixture. `StoreKit.make(**session_options)` builds a store the way another
replica (or a restarted process) of the same deployment would: same secrets, same backend, no
shared memory. Whatever a store keeps where, these must hold for the user.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import pytest

from sidecar.session.model import Identity, Session, Tokens
from sidecar.session.store import SessionStore

from .conftest import Jar

NOW = 1_800_000_000.0
LIFETIME = 43200
COOKIE = "__Host-_sidecar"


def random_text(rng: random.Random, n: int) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(n)).decode().rstrip("=")


def make_session(
    groups: int = 3, *, seed: int = 1, created_at: float = NOW, sub: str = "248289761001"
) -> Session:
    rng = random.Random(seed)
    names = tuple(f"team-{i:03d}-{random_text(rng, 12)}" for i in range(groups))
    return Session(
        id=random_text(rng, 18),
        identity=Identity(
            sub=sub,
            user="jane",
            email="jane@example.com",
            email_verified=True,
            username="Jane Doe é",
            groups=names,
            claims={"sub": sub, "groups": list(names), "amr": ["pwd", "mfa"]},
        ),
        tokens=Tokens(
            access_token="at-" + random_text(rng, 40 + groups * 30),
            refresh_token="rt-" + random_text(rng, 32),
            id_token="it-" + random_text(rng, 600),
            expires_at=created_at + 300,
        ),
        created_at=created_at,
        expires_at=created_at + LIFETIME,
        last_seen_at=created_at,
        provider_sid=f"sid-{seed}",
    )


@dataclass
class StoreKit:
    """How a suite run builds stores: `make(**session_options)` gives a fresh replica's store;
    `foreign()` one of another deployment (other secrets, and for Redis another key prefix)."""

    make: Callable[..., Awaitable[SessionStore]]
    foreign: Callable[[], Awaitable[SessionStore]]


class StoreSuite:
    """The behaviour every `SessionStore` shares. Subclasses provide the `kit` fixture."""

    @pytest.fixture
    def kit(self) -> StoreKit:
        raise NotImplementedError

    async def test_nothing_saved_loads_as_no_session(self, kit: StoreKit) -> None:
        store = await kit.make()
        assert await store.load({}, now=NOW) is None

    async def test_saved_session_loads_on_another_replica(self, kit: StoreKit) -> None:
        jar, session = Jar(), make_session()
        jar.apply(await (await kit.make()).save(session, jar.cookies, now=NOW))
        assert await (await kit.make()).load(jar.cookies, now=NOW + 1) == session

    async def test_session_with_200_groups_round_trips(self, kit: StoreKit) -> None:
        jar, session = Jar(), make_session(200)
        jar.apply(await (await kit.make()).save(session, jar.cookies, now=NOW))
        loaded = await (await kit.make()).load(jar.cookies, now=NOW + 1)
        assert loaded == session
        assert loaded is not None and len(loaded.identity.groups) == 200

    async def test_cookie_lives_as_long_as_the_session(self, kit: StoreKit) -> None:
        jar = Jar()
        jar.apply(await (await kit.make()).save(make_session(), jar.cookies, now=NOW + 3600))
        assert jar.attributes[COOKIE]["max-age"] == str(LIFETIME - 3600)
        assert jar.attributes[COOKIE].keys() >= {"secure", "httponly", "samesite"}

    async def test_saving_again_replaces_the_session(self, kit: StoreKit) -> None:
        store, jar = await kit.make(), Jar()
        first = make_session(200)
        jar.apply(await store.save(first, jar.cookies, now=NOW))
        second = replace(
            first,
            identity=replace(first.identity, groups=("one",)),
            tokens=replace(first.tokens, access_token="at-new", expires_at=NOW + 600),
            last_seen_at=NOW + 5,
        )
        jar.apply(await store.save(second, jar.cookies, now=NOW + 5))
        assert await (await kit.make()).load(jar.cookies, now=NOW + 6) == second

    async def test_a_new_sign_in_replaces_the_old_session(self, kit: StoreKit) -> None:
        store, jar = await kit.make(), Jar()
        jar.apply(await store.save(make_session(seed=1), jar.cookies, now=NOW))
        newer = make_session(seed=2)
        jar.apply(await store.save(newer, jar.cookies, now=NOW + 1))
        assert await (await kit.make()).load(jar.cookies, now=NOW + 2) == newer

    @pytest.mark.parametrize("dropped", ["access_token", "refresh_token", "id_token"])
    async def test_keep_tokens_drops_what_it_turns_off(self, kit: StoreKit, dropped: str) -> None:
        jar, session = Jar(), make_session()
        store = await kit.make(keep_tokens={dropped: False})
        jar.apply(await store.save(session, jar.cookies, now=NOW))
        loaded = await (await kit.make()).load(jar.cookies, now=NOW)
        assert loaded is not None
        for name in ("access_token", "refresh_token", "id_token"):
            kept = getattr(loaded.tokens, name)
            assert kept is None if name == dropped else kept == getattr(session.tokens, name)
        assert loaded.tokens.expires_at == session.tokens.expires_at

    async def test_load_after_absolute_expiry_gives_none(self, kit: StoreKit) -> None:
        store, jar, session = await kit.make(), Jar(), make_session()
        jar.apply(await store.save(session, jar.cookies, now=NOW))
        assert await store.load(jar.cookies, now=session.expires_at - 1) == session
        assert await store.load(jar.cookies, now=session.expires_at) is None

    async def test_load_after_idle_timeout_gives_none(self, kit: StoreKit) -> None:
        store, jar, session = await kit.make(idle_timeout_seconds=1800), Jar(), make_session()
        jar.apply(await store.save(session, jar.cookies, now=NOW))
        assert await store.load(jar.cookies, now=NOW + 1800) == session
        assert await store.load(jar.cookies, now=NOW + 1801) is None

    async def test_touching_the_session_extends_the_idle_window(self, kit: StoreKit) -> None:
        store, jar, session = await kit.make(idle_timeout_seconds=1800), Jar(), make_session()
        jar.apply(await store.save(session, jar.cookies, now=NOW))
        touched = replace(session, last_seen_at=NOW + 1700)
        jar.apply(await store.save(touched, jar.cookies, now=NOW + 1700))
        assert await store.load(jar.cookies, now=NOW + 3000) == touched

    async def test_saving_an_ended_session_clears_it(self, kit: StoreKit) -> None:
        store, jar, session = await kit.make(), Jar(), make_session()
        jar.apply(await store.save(session, jar.cookies, now=NOW))
        jar.apply(await store.save(session, jar.cookies, now=session.expires_at + 1))
        assert COOKIE not in jar.cookies

    async def test_clear_ends_the_session_but_keeps_sign_ins_and_other_cookies(
        self, kit: StoreKit
    ) -> None:
        store, jar = await kit.make(), Jar()
        jar.apply(await store.save(make_session(200), jar.cookies, now=NOW))
        jar.cookies["__Host-_sidecar_login_abcdefgh"] = "attempt"
        jar.cookies["_session"] = "provider"
        jar.apply(await store.clear(jar.cookies, now=NOW + 1))
        assert sorted(jar.cookies) == ["__Host-_sidecar_login_abcdefgh", "_session"]
        assert await (await kit.make()).load(jar.cookies, now=NOW + 2) is None

    async def test_clear_without_a_session_sets_nothing(self, kit: StoreKit) -> None:
        assert await (await kit.make()).clear({"_session": "provider"}, now=NOW) == []

    @pytest.mark.parametrize("position", [0, 5, 20, -3, -1])
    async def test_tampered_cookie_gives_none(self, kit: StoreKit, position: int) -> None:
        store, jar = await kit.make(), Jar()
        jar.apply(await store.save(make_session(), jar.cookies, now=NOW))
        value = jar.cookies[COOKIE]
        flipped = "A" if value[position] != "A" else "B"
        chars = list(value)
        chars[position] = flipped
        jar.cookies[COOKIE] = "".join(chars)
        assert await (await kit.make()).load(jar.cookies, now=NOW) is None

    @pytest.mark.parametrize("value", ["", "garbage", "ä" * 50, "A" * 5000])
    async def test_garbage_cookie_gives_none(self, kit: StoreKit, value: str) -> None:
        assert await (await kit.make()).load({COOKIE: value}, now=NOW) is None

    async def test_cookie_from_another_deployment_gives_none(self, kit: StoreKit) -> None:
        jar = Jar()
        jar.apply(await (await kit.foreign()).save(make_session(), jar.cookies, now=NOW))
        assert await (await kit.make()).load(jar.cookies, now=NOW) is None

    async def test_sessions_of_two_browsers_stay_apart(self, kit: StoreKit) -> None:
        store, first, second = await kit.make(), Jar(), Jar()
        alice, bob = make_session(seed=1, sub="alice"), make_session(seed=2, sub="bob")
        first.apply(await store.save(alice, first.cookies, now=NOW))
        second.apply(await store.save(bob, second.cookies, now=NOW))
        other = await kit.make()
        assert await other.load(first.cookies, now=NOW + 1) == alice
        assert await other.load(second.cookies, now=NOW + 1) == bob
