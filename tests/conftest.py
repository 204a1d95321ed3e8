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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A private redis-server (AOF, appendfsync always) for this test session."""
    from tests.redisfixture import REDIS_SERVER, RedisServer, set_session_server

    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start_sync()
    set_session_server(server)
    try:
        yield server
    finally:
        set_session_server(None)
        server.stop_sync()


STORE_BACKEND_FIXTURES = ("backend", "tstore")
"""Fixtures parametrized over tests/storefixture.py's FACTORIES."""


@pytest.fixture(autouse=True)
def _flush_redis_for_redis_backend(request: pytest.FixtureRequest) -> None:
    """A store-contract test on the "redis" backend starts from an empty Redis."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and any(
        callspec.params.get(name) == "redis" for name in STORE_BACKEND_FIXTURES
    ):
        request.getfixturevalue("redis_server").flushall_sync()
