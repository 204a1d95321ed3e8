"""TLS to the relay, pinned through the signed directory: real certificates (made by
``keys.tls``), a real TLS listener, the client's SPKI check before any request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.client import RelayClient
from clients.errors import TransportError
from keys.tls import create_certificate, spki_sha256_pem
from relay.app import StartupError, tls_context
from relay.settings import RelaySettings
from tests.netfixture import NOW, Network
from tests.relayfixture import FakeClock, RelayEnv, start_guarded_relay, write_relay_files


def _cert(tmp: Path, name: str) -> tuple[Path, Path, str]:
    key_pem, cert_pem = create_certificate("relay-eu", ["127.0.0.1"], now_ms=NOW)
    key, cert = tmp / f"{name}.key", tmp / f"{name}.pem"
    key.write_bytes(key_pem)
    cert.write_bytes(cert_pem)
    return key, cert, spki_sha256_pem(cert_pem)


def _publish(net: Network, tmp: Path, pins: list[str]) -> None:
    net.relay_tls_pins = pins
    d = net.republish(now=NOW)
    (tmp / "directory" / f"v{d.version:04d}.jws").write_text(d.token + "\n")


@pytest.fixture
async def tls_relay(tmp_path: Path, net: Network) -> AsyncIterator[tuple[RelayEnv, list[str]]]:
    """A relay serving certificate B, whose directory lists A and B (a rotation)."""
    _, _, pin_a = await asyncio.to_thread(_cert, tmp_path, "a")
    key_b, cert_b, pin_b = await asyncio.to_thread(_cert, tmp_path, "b")
    settings = await asyncio.to_thread(write_relay_files, tmp_path, net)
    await asyncio.to_thread(_publish, net, tmp_path, [pin_a, pin_b])
    settings = settings.model_copy(
        update={"tls_cert_file": cert_b, "tls_key_file": key_b, "header_timeout_s": 1.0}
    )
    env = RelayEnv(net=net, settings=settings, clock=FakeClock())
    async for ready in start_guarded_relay(env, tls=True):
        yield ready, [pin_a, pin_b]


async def test_a_relay_whose_key_the_directory_does_not_list_is_refused(
    tls_relay: tuple[RelayEnv, list[str]],
) -> None:
    env, (pin_a, pin_b) = tls_relay
    assert env.base_url.startswith("https://")
    # The authority's pinned directory lists only A: the relay presenting B is refused
    # before any request is sent, with one line naming the key it presented.
    client = RelayClient(
        env.base_url, env.net["it-tpc"], clock=env.clock, tls_pins=lambda: frozenset({pin_a})
    )
    try:
        with pytest.raises(TransportError) as refused:
            await client.poll(wait=0)
        message = str(refused.value)
        assert f"pin {pin_b}" in message and "does not list" in message
        assert "\n" not in message
        with pytest.raises(TransportError):
            await client.connect_stream()
    finally:
        await client.close()


async def test_a_rotated_certificate_published_in_a_new_version_is_accepted(
    tls_relay: tuple[RelayEnv, list[str]],
) -> None:
    env, _ = tls_relay
    # The pins of the newest directory (A and B): the rotated certificate B works, for
    # requests and for the WebSocket.
    client = RelayClient(
        env.base_url, env.net["it-tpc"], clock=env.clock, tls_pins=env.net.directory.tls_pins
    )
    try:
        assert await client.poll(wait=0) == []
        stream = await client.connect_stream()
        await stream.close()
    finally:
        await client.close()


async def test_before_any_directory_the_first_fetch_is_allowed(
    tls_relay: tuple[RelayEnv, list[str]],
) -> None:
    env, _ = tls_relay
    client = RelayClient(env.base_url, env.net["it-tpc"], clock=env.clock, tls_pins=lambda: None)
    try:
        current = await client.directory()
        assert current.version == env.net.directory.version
    finally:
        await client.close()


def test_the_relay_refuses_to_serve_without_tls_or_with_an_unlisted_certificate(
    tmp_path: Path, net: Network, relay_settings: RelaySettings
) -> None:
    with pytest.raises(StartupError, match="plain_http = true"):
        tls_context(relay_settings, net.directory)
    assert (
        tls_context(relay_settings.model_copy(update={"plain_http": True}), net.directory) is None
    )
    key, cert, pin = _cert(tmp_path, "c")
    listed = relay_settings.model_copy(update={"tls_cert_file": cert, "tls_key_file": key})
    with pytest.raises(StartupError, match=f"pin {pin}"):
        tls_context(listed, net.directory)
    net.relay_tls_pins = [pin]
    assert tls_context(listed, net.republish(now=NOW)) is not None
    with pytest.raises(StartupError, match="both"):
        tls_context(relay_settings.model_copy(update={"tls_cert_file": cert}), net.directory)


async def test_a_connection_made_before_the_pin_is_not_reused_after_it(
    tls_relay: tuple[RelayEnv, list[str]],
) -> None:
    env, (pin_a, _) = tls_relay
    pins: list[frozenset[str] | None] = [None]
    client = RelayClient(env.base_url, env.net["it-tpc"], clock=env.clock, tls_pins=lambda: pins[0])
    try:
        await client.directory()  # before any directory: allowed, unpinned
        pins[0] = frozenset({pin_a})  # the accepted directory lists only A; the relay shows B
        with pytest.raises(TransportError, match="does not list"):
            await client.poll(wait=0)
    finally:
        await client.close()


async def test_a_connection_that_never_starts_its_tls_handshake_is_cut_off(
    tls_relay: tuple[RelayEnv, list[str]],
) -> None:
    env, _ = tls_relay
    port = int(env.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(5):  # header_timeout_s is 1 s here
            assert await reader.read(-1) == b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
