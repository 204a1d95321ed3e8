"""A network root rotation end to end: the keeper's statement, signed by the old root,
sits beside the versions in the relay's folder; a daemon that pins only the old root
follows it through the relay and accepts the version the new root signed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.client import RelayClient
from clients.directory import PinnedDirectory
from keys.directory import DirectoryPin, sign_directory, sign_rotation
from keys.identity import Identity
from relay.api.state import DIRECTORY
from tests.netfixture import NOW, Network
from tests.relayfixture import FakeClock, RelayEnv, start_relay, write_relay_files


@pytest.fixture
async def rotated_relay(tmp_path: Path, net: Network) -> AsyncIterator[tuple[RelayEnv, Identity]]:
    settings = await asyncio.to_thread(write_relay_files, tmp_path, net)
    env = RelayEnv(net=net, settings=settings, clock=FakeClock())
    async for ready in start_relay(env):
        yield ready, net.root


async def test_a_daemon_pinning_the_old_root_follows_the_rotation(
    rotated_relay: tuple[RelayEnv, Identity], tmp_path: Path
) -> None:
    env, old_root = rotated_relay
    net = env.net
    new_root = Identity.generate("root-2", kind="root", now=NOW - 1000)
    statement = sign_rotation(
        old_root, new_root.signing_key().public, network="test-net", from_version=2, now=NOW
    )
    v2 = sign_directory(
        new_root, network="test-net", authorities=net.entries(), previous=net.directory, now=NOW
    )
    folder = env.settings.directory_dir

    def publish() -> None:
        (folder / "root-0002.rotation").write_text(statement + "\n")
        (folder / "v0002.jws").write_text(v2.token + "\n")

    await asyncio.to_thread(publish)
    assert env.server is not None
    holder = env.server.app[DIRECTORY]
    await asyncio.to_thread(holder.load)  # the relay's 5 s reload, now
    assert holder.current.version == 2

    pinned = PinnedDirectory(DirectoryPin([old_root.signing_key().public]), tmp_path / "pin.json")
    client = RelayClient(env.base_url, net["it-tpc"], clock=env.clock)
    try:
        current = await pinned.refresh(client)
    finally:
        await client.close()
    assert current.version == 2 and current.root_kid == new_root.signing_key().kid
    # Persisted: a restarted daemon trusts the new root without the statement.
    text = await asyncio.to_thread((tmp_path / "pin.json").read_text)
    again = DirectoryPin.load([old_root.signing_key().public], text)
    assert again.accept(v2.token).version == 2
