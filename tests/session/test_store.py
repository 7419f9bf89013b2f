"""The cookie session store, seen through the cookies a browser would keep and send back."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from sidecar.session.codec import SessionCodec
from sidecar.session.cookies import CookiePolicy
from sidecar.session.model import Identity, Session, Tokens
from sidecar.session.store import CookieSessionStore, SessionStore

from .conftest import Jar, make_config
from .store_suite import StoreKit, StoreSuite

NOW = 1_800_000_000.0
SECRET = "q0J7tB9y4kKz0mJ2pA7c2oU8x5nV1rW3eT6yH9sD4fG"


def make_store(**session: Any) -> CookieSessionStore:
    config = make_config(**session)
    assert config.session is not None
    return CookieSessionStore(
        SessionCodec([s.get_secret_value() for s in config.session.secrets]),
        CookiePolicy.from_config(config),
        config.session,
    )


def random_text(rng: random.Random, n: int) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(n)).decode().rstrip("=")


def make_session(groups: int = 3, *, seed: int = 1, created_at: float = NOW) -> Session:
    rng = random.Random(seed)
    names = tuple(f"team-{i:03d}-{random_text(rng, 12)}" for i in range(groups))
    return Session(
        id=random_text(rng, 16),
        identity=Identity(
            sub="248289761001",
            user="jane",
            email="jane@example.com",
            email_verified=True,
            username="Jane Doe é",
            groups=names,
            claims={"sub": "248289761001", "groups": list(names), "amr": ["pwd", "mfa"]},
        ),
        tokens=Tokens(
            access_token=random_text(rng, 40 + groups * 30),
            refresh_token=random_text(rng, 32),
            id_token=random_text(rng, 600),
            expires_at=created_at + 300,
        ),
        created_at=created_at,
        expires_at=created_at + 43200,
        last_seen_at=created_at,
        provider_sid="sid-1",
    )


async def test_cookie_store_satisfies_the_store_interface() -> None:
    store: SessionStore = make_store()
    assert await store.load({}, now=NOW) is None


async def test_session_round_trips_through_one_cookie() -> None:
    store, jar, session = make_store(), Jar(), make_session()
    jar.apply(await store.save(session, jar.cookies, now=NOW))
    assert list(jar.cookies) == ["__Host-_sidecar"]
    assert await make_store().load(jar.cookies, now=NOW + 1) == session


async def test_session_with_200_groups_round_trips_through_several_cookies() -> None:
    store, jar, session = make_store(), Jar(), make_session(200)
    jar.apply(await store.save(session, jar.cookies, now=NOW))
    assert len(jar.cookies) >= 3
    fresh = make_store()  # another replica: no cache, same key
    loaded = await fresh.load(jar.cookies, now=NOW + 1)
    assert loaded == session
    assert loaded is not None and len(loaded.identity.groups) == 200


async def test_cookie_max_age_is_the_remaining_absolute_lifetime() -> None:
    store, jar, session = make_store(), Jar(), make_session()
    jar.apply(await store.save(session, jar.cookies, now=NOW + 3600))
    assert jar.attributes["__Host-_sidecar"]["max-age"] == str(43200 - 3600)


async def test_shrinking_session_deletes_leftover_chunks() -> None:
    store, jar = make_store(), Jar()
    jar.apply(await store.save(make_session(200), jar.cookies, now=NOW))
    big = len(jar.cookies)
    small = make_session(2)
    jar.apply(await store.save(small, jar.cookies, now=NOW + 5))
    assert big > 1 and list(jar.cookies) == ["__Host-_sidecar"]
    assert await make_store().load(jar.cookies, now=NOW + 6) == small


async def test_growing_session_replaces_every_chunk() -> None:
    store, jar = make_store(), Jar()
    jar.apply(await store.save(make_session(100, seed=1), jar.cookies, now=NOW))
    bigger = make_session(200, seed=2)
    jar.apply(await store.save(bigger, jar.cookies, now=NOW))
    assert await make_store().load(jar.cookies, now=NOW) == bigger


@pytest.mark.parametrize("dropped", ["access_token", "refresh_token", "id_token"])
async def test_save_drops_the_tokens_keep_tokens_turns_off(dropped: str) -> None:
    store, jar, session = make_store(keep_tokens={dropped: False}), Jar(), make_session()
    jar.apply(await store.save(session, jar.cookies, now=NOW))
    loaded = await make_store().load(jar.cookies, now=NOW)
    assert loaded is not None
    for name in ("access_token", "refresh_token", "id_token"):
        kept = getattr(loaded.tokens, name)
        assert kept is None if name == dropped else kept == getattr(session.tokens, name)
    assert loaded.tokens.expires_at == session.tokens.expires_at


async def test_dropping_tokens_makes_the_cookie_smaller() -> None:
    full, lean = Jar(), Jar()
    session = make_session(200)
    full.apply(await make_store().save(session, {}, now=NOW))
    lean_store = make_store(keep_tokens={"access_token": False, "id_token": False})
    lean.apply(await lean_store.save(session, {}, now=NOW))
    assert sum(map(len, lean.cookies.values())) < sum(map(len, full.cookies.values()))


async def test_load_after_absolute_expiry_gives_none() -> None:
    store, jar, session = make_store(), Jar(), make_session()
    jar.apply(await store.save(session, jar.cookies, now=NOW))
    assert await store.load(jar.cookies, now=session.expires_at - 1) == session
    assert await store.load(jar.cookies, now=session.expires_at) is None  # cached: still checked
    assert await make_store().load(jar.cookies, now=session.expires_at) is None


async def test_load_after_idle_timeout_gives_none() -> None:
    store, jar, session = make_store(idle_timeout_seconds=1800), Jar(), make_session()
    jar.apply(await store.save(session, jar.cookies, now=NOW))
    assert await store.load(jar.cookies, now=NOW + 1800) == session
    assert await store.load(jar.cookies, now=NOW + 1801) is None


async def test_saving_a_touched_session_extends_the_idle_window() -> None:
    store, jar, session = make_store(idle_timeout_seconds=1800), Jar(), make_session()
    jar.apply(await store.save(session, jar.cookies, now=NOW))
    touched = Session.from_dict({**session.to_dict(), "last_seen_at": NOW + 1700})
    jar.apply(await store.save(touched, jar.cookies, now=NOW + 1700))
    assert await store.load(jar.cookies, now=NOW + 3000) == touched


async def test_saving_an_ended_session_clears_it() -> None:
    store, jar, session = make_store(), Jar(), make_session()
    jar.apply(await store.save(session, jar.cookies, now=NOW))
    jar.apply(await store.save(session, jar.cookies, now=session.expires_at + 1))
    assert jar.cookies == {}


@pytest.mark.parametrize("position", [0, 10, 50, -1])
async def test_tampered_cookie_gives_none(position: int) -> None:
    store, jar = make_store(), Jar()
    jar.apply(await store.save(make_session(), jar.cookies, now=NOW))
    value = jar.cookies["__Host-_sidecar"]
    flipped = "A" if value[position] != "A" else "B"
    index = position % len(value)
    jar.cookies["__Host-_sidecar"] = value[:index] + flipped + value[index + 1 :]
    assert await store.load(jar.cookies, now=NOW) is None


async def test_truncated_cookie_gives_none() -> None:
    store, jar = make_store(), Jar()
    jar.apply(await store.save(make_session(), jar.cookies, now=NOW))
    jar.cookies["__Host-_sidecar"] = jar.cookies["__Host-_sidecar"][:-10]
    assert await store.load(jar.cookies, now=NOW) is None


async def test_swapped_chunks_give_none() -> None:
    store, jar = make_store(), Jar()
    jar.apply(await store.save(make_session(200), jar.cookies, now=NOW))
    cookies = dict(jar.cookies)
    cookies["__Host-_sidecar_1"], cookies["__Host-_sidecar_2"] = (
        cookies["__Host-_sidecar_2"],
        cookies["__Host-_sidecar_1"],
    )
    assert await make_store().load(cookies, now=NOW) is None


async def test_missing_last_chunk_gives_none() -> None:
    store, jar = make_store(), Jar()
    jar.apply(await store.save(make_session(200), jar.cookies, now=NOW))
    last = sorted(jar.cookies, key=len)[-1]
    del jar.cookies[last]
    assert await make_store().load(jar.cookies, now=NOW) is None


async def test_cookie_from_another_deployment_gives_none() -> None:
    theirs = CookieSessionStore(
        SessionCodec(["a different deployment's key, 32+ characters"]),
        make_store()._policy,
        make_config().session,  # type: ignore[arg-type]
    )
    jar = Jar()
    jar.apply(await theirs.save(make_session(), jar.cookies, now=NOW))
    assert await make_store().load(jar.cookies, now=NOW) is None


@pytest.mark.parametrize("value", ["", "garbage", "ä" * 50, "A" * 5000])
async def test_garbage_cookie_gives_none(value: str) -> None:
    assert await make_store().load({"__Host-_sidecar": value}, now=NOW) is None


async def test_clear_deletes_session_chunks_but_keeps_login_attempts_and_foreign_cookies() -> None:
    store, jar = make_store(), Jar()
    jar.apply(await store.save(make_session(200), jar.cookies, now=NOW))
    jar.cookies["__Host-_sidecar_login_abcdefgh"] = "attempt"
    jar.cookies["_session"] = "provider"
    jar.apply(await store.clear(jar.cookies, now=NOW))
    assert sorted(jar.cookies) == ["__Host-_sidecar_login_abcdefgh", "_session"]


async def test_clear_without_session_cookies_sets_nothing() -> None:
    assert await make_store().clear({"_session": "provider"}, now=NOW) == []


async def test_decode_cache_stays_bounded() -> None:
    config = make_config()
    assert config.session is not None
    store = CookieSessionStore(
        SessionCodec([SECRET]), CookiePolicy.from_config(config), config.session, cache_size=4
    )
    jars = []
    for seed in range(10):
        jar = Jar()
        jar.apply(await store.save(make_session(seed=seed), {}, now=NOW))
        jars.append(jar)
    assert len(store._cache) == 4
    for seed, jar in enumerate(jars):  # evicted entries still decode
        loaded = await store.load(jar.cookies, now=NOW)
        assert loaded is not None and loaded.id == make_session(seed=seed).id
    assert len(store._cache) == 4


class TestCookieStore(StoreSuite):
    """The shared store behaviour (tests/session/store_suite.py), for the cookie store."""

    @pytest.fixture
    def kit(self) -> StoreKit:
        async def make(**session: Any) -> SessionStore:
            return make_store(**session)

        async def foreign() -> SessionStore:
            config = make_config(secrets=["a different deployment's key, 32+ characters"])
            assert config.session is not None
            return CookieSessionStore(
                SessionCodec(["a different deployment's key, 32+ characters"]),
                CookiePolicy.from_config(config),
                config.session,
            )

        return StoreKit(make, foreign)
