"""A request signed with a key the directory revoked, or whose validity the directory cut
short (a rotation's grace ended), is refused like an unknown key; the new key works."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.client import RelayClient
from clients.errors import AuthenticationError, StreamClosedError
from keys import wire
from relay.api.state import DIRECTORY
from relay.app import cut_revoked_sessions
from tests.netfixture import NOW, Network
from tests.relayfixture import FakeClock, RelayEnv, start_relay, write_relay_files


@pytest.fixture
async def rotated(
    tmp_path: Path, net: Network
) -> AsyncIterator[tuple[RelayEnv, dict[str, RelayClient]]]:
    it_old, fr_old = net["it-tpc"], net["fr-oclcc"]
    # it-tpc rotates and revokes its old signing key; fr-oclcc rotates with a grace
    # that has already ended.
    it_new = it_old.rotate_signing(now=NOW - 500)
    it_new = it_new.revoke(it_old.signing_keys[0].kid, now=NOW - 400)
    fr_new = fr_old.rotate_signing(now=NOW - 500, grace_ms=100)
    net.republish(now=NOW - 300, replace=[it_new, fr_new])
    settings = await asyncio.to_thread(write_relay_files, tmp_path, net)
    env = RelayEnv(net=net, settings=settings, clock=FakeClock())
    async for ready in start_relay(env):
        old = {
            "it-tpc": RelayClient(ready.base_url, it_old, clock=ready.clock),
            "fr-oclcc": RelayClient(ready.base_url, fr_old, clock=ready.clock),
        }
        try:
            yield ready, old
        finally:
            for c in old.values():
                await c.close()


async def test_revoked_and_cut_short_keys_are_refused_and_new_keys_work(
    rotated: tuple[RelayEnv, dict[str, RelayClient]],
) -> None:
    env, old = rotated
    for aid, client in old.items():
        with pytest.raises(AuthenticationError) as refused:
            await client.poll(wait=0)
        assert refused.value.code == "unknown_key", aid
        with pytest.raises(AuthenticationError):
            await client.connect_stream()  # the WebSocket upgrade too
        assert await env.client(aid).poll(wait=0) == []  # the directory's current key


async def test_an_open_session_is_cut_when_its_key_is_revoked(tmp_path: Path, net: Network) -> None:
    settings = await asyncio.to_thread(write_relay_files, tmp_path, net)
    env = RelayEnv(net=net, settings=settings, clock=FakeClock())
    async for ready in start_relay(env):
        old = net["it-tpc"]
        stream = await ready.client("it-tpc").connect_stream()
        assert isinstance(await stream.receive(), wire.Hello)
        other = await ready.client("fr-oclcc").connect_stream()
        assert isinstance(await other.receive(), wire.Hello)
        # The keeper publishes a version that revokes the key the session was opened with.
        renewed = old.rotate_signing(now=NOW - 500)
        renewed = renewed.revoke(old.signing_keys[0].kid, now=NOW - 400)
        d = net.republish(now=NOW - 300, replace=[renewed])
        folder = settings.directory_dir
        await asyncio.to_thread((folder / f"v{d.version:04d}.jws").write_text, d.token + "\n")
        assert ready.server is not None
        app = ready.server.app
        await asyncio.to_thread(app[DIRECTORY].load)  # the 5 s reload, now
        assert await cut_revoked_sessions(app) == 1  # what the maintenance loop runs
        with pytest.raises(StreamClosedError):
            await stream.receive()
        await other.close()  # fr-oclcc's session was left alone
