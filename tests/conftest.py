from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from tests.netfixture import Network, make_network


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test that makes a blocking call (file, socket, sqlite, sleep) on the loop."""
    with blockbuster_ctx() as bb:
        yield bb


@pytest.fixture
def net() -> Network:
    return make_network()
