"""Connecting to Redis the ways `session.redis` allows, each against a real server: a plain URL
with a password, TLS with a checked certificate (and refused without the right CA), and a
master found through a real Redis Sentinel; plus what is shown of the target (never a password)
and how health follows an outage."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.redis_server import REDIS_SERVER, RedisServer, free_port, require_redis

from sidecar.config.model import RedisConfig
from sidecar.session.redis_client import (
    RedisHealth,
    build_redis,
    close_redis,
    describe_target,
    ping,
)

PASSWORD = "a-redis-password-for-tests"


def redis_config(**values: Any) -> RedisConfig:
    return RedisConfig.model_validate(values)


async def round_trip(config: RedisConfig) -> bytes | str | None:
    client = build_redis(config)
    try:
        await client.set("sidecar-test", "ok", ex=10)
        value: bytes | str | None = await client.get("sidecar-test")
        return value
    finally:
        await close_redis(client)


def test_describe_target_never_shows_the_password() -> None:
    config = redis_config(url=f"rediss://user:{PASSWORD}@redis.example:6380/2")
    assert describe_target(config) == "rediss://redis.example:6380"
    assert PASSWORD not in repr(config)
    sentinel = redis_config(
        sentinel={"master": "mymaster", "nodes": ["s1:26379"], "password": PASSWORD},
        password=PASSWORD,
    )
    assert describe_target(sentinel) == "sentinel master mymaster"
    assert PASSWORD not in repr(sentinel)
    assert describe_target(redis_config(url="unix:///run/redis.sock")) == "unix:/run/redis.sock"


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"url": "http://redis:6379"},
        {"url": "redis://r:6379", "sentinel": {"master": "m", "nodes": ["s:26379"]}},
        {"url": "redis://:secret@r:6379", "password": "p"},
        {"url": "redis://u@r:6379", "username": "v"},
        {"sentinel": {"master": "m", "nodes": []}},
        {"sentinel": {"master": "m", "nodes": ["no-port"]}},
        {"url": "redis://r:6379", "tls": {"cert_file": "c.pem"}},
        {"url": "redis://r:6379", "key_prefix": "has space"},
    ],
)
def test_invalid_redis_settings_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        redis_config(**values)


async def test_password_in_the_url_or_apart(tmp_path: Path) -> None:
    require_redis()
    server = RedisServer(tmp_path, arguments=["--requirepass", PASSWORD])
    server.start()
    try:
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
        assert await round_trip(redis_config(url=url)) == b"ok"
        apart = redis_config(url=f"redis://127.0.0.1:{server.port}/0", password=PASSWORD)
        assert await round_trip(apart) == b"ok"
    finally:
        server.stop()


async def test_health_follows_an_outage(redis_server: RedisServer) -> None:
    client = build_redis(redis_config(url=redis_server.url))
    health = RedisHealth("test")
    try:
        assert await ping(client, health) and health.ok
        redis_server.stop()
        assert not await ping(client, health)
        assert not health.ok and health.detail.startswith("unreachable")
    finally:
        await client.aclose()


# -- TLS -------------------------------------------------------------------------------------


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, signer: Any
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            False,
        )
    return builder.sign(signer, hashes.SHA256())


def _write_pki(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) PEM files."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(f"{name} test CA", ca_key, None, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("127.0.0.1", key, ca, ca_key)
    paths = (directory / f"{name}-ca.pem", directory / f"{name}.pem", directory / f"{name}.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    """A redis-server answering TLS on its own port; yields it, that port and the CA file."""
    require_redis()
    ca, cert, key = _write_pki(tmp_path, "redis")
    tls_port = free_port()
    server = RedisServer(
        tmp_path,
        arguments=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
        ],
    )
    server.start()
    yield server, tls_port, ca
    server.stop()


async def test_tls_with_the_servers_ca(tls_redis: tuple[RedisServer, int, Path]) -> None:
    _server, port, ca = tls_redis
    config = redis_config(url=f"rediss://127.0.0.1:{port}/0", tls={"ca_file": str(ca)})
    assert await round_trip(config) == b"ok"
    upgraded = redis_config(
        url=f"redis://127.0.0.1:{port}/0", tls={"enabled": True, "ca_file": str(ca)}
    )
    assert await round_trip(upgraded) == b"ok"


async def test_tls_refuses_a_server_certificate_it_cannot_check(
    tls_redis: tuple[RedisServer, int, Path], tmp_path: Path
) -> None:
    _server, port, _ca = tls_redis
    other_ca, _, _ = _write_pki(tmp_path, "other")
    client = build_redis(
        redis_config(url=f"rediss://127.0.0.1:{port}/0", tls={"ca_file": str(other_ca)})
    )
    health = RedisHealth("tls")
    try:
        assert not await ping(client, health)
    finally:
        await client.aclose()


# -- Sentinel --------------------------------------------------------------------------------


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[RedisServer, int]]:
    """A password-protected master and one real Sentinel watching it; yields both ports."""
    require_redis()
    master = RedisServer(tmp_path, arguments=["--requirepass", PASSWORD])
    master.start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        f"sentinel auth-pass mymaster {PASSWORD}\n"
    )
    process = subprocess.Popen(
        [REDIS_SERVER, str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_master(port)
        yield master, port
    finally:
        process.terminate()
        process.wait(timeout=5)
        master.stop()


def _wait_for_master(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"SENTINEL get-master-addr-by-name mymaster\r\n")
                if b"127.0.0.1" in sock.recv(256):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError("sentinel did not come up")


async def test_master_found_through_sentinel(sentinel: tuple[RedisServer, int]) -> None:
    _master, port = sentinel
    config = redis_config(
        sentinel={"master": "mymaster", "nodes": [f"127.0.0.1:{port}"]}, password=PASSWORD
    )
    assert await asyncio.wait_for(round_trip(config), 10) == b"ok"
