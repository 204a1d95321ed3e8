from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from relay.settings import RelaySettings
from tests.netfixture import Network, make_network
from tests.relayfixture import FakeClock, RelayEnv, start_relay, write_relay_files


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test that makes a blocking call (file, socket, sqlite, sleep) on the loop."""
    with blockbuster_ctx() as bb:
        yield bb


@pytest.fixture
def net() -> Network:
    return make_network()


@pytest.fixture
def relay_settings(tmp_path: Path, net: Network) -> RelaySettings:
    return write_relay_files(tmp_path, net)


@pytest.fixture
async def relay(relay_settings: RelaySettings, net: Network) -> AsyncIterator[RelayEnv]:
    env = RelayEnv(net=net, settings=relay_settings, clock=FakeClock())
    async for started in start_relay(env):
        yield started
