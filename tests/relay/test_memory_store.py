"""The memory store beyond the shared contract: it runs a whole relay, and keeps nonces.

``RELAY_STORE=memory`` builds it; ``create_app(settings, store=MemoryStore())`` serves
the API on it like on SQLite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keys.envelope import seal
from relay.app import make_store
from relay.settings import RelaySettings
from relay.store.memory import MemoryStore
from tests.netfixture import NOW, Network
from tests.relayfixture import FakeClock, RelayEnv, start_relay


@pytest.fixture
async def memory_relay(relay_settings: RelaySettings, net: Network) -> AsyncIterator[RelayEnv]:
    env = RelayEnv(net=net, settings=relay_settings, clock=FakeClock())
    async for started in start_relay(env, store=MemoryStore()):
        yield started


def test_relay_store_memory_selects_it(
    relay_settings: RelaySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_STORE", "memory")
    settings = RelaySettings(**relay_settings.model_dump(exclude={"store"}))
    assert settings.store == "memory"
    assert isinstance(make_store(settings), MemoryStore)


async def test_submit_poll_and_ack_on_a_relay_with_the_memory_store(
    memory_relay: RelayEnv,
) -> None:
    net = memory_relay.net
    sealed = seal(
        net["it-tpc"],
        net.directory,
        to=["fr-oclcc"],
        content={"kind": "free_text", "text": "hi"},
        now=NOW,
    )
    result = await memory_relay.client("it-tpc").send(sealed.token)
    assert result.id == sealed.id and not result.duplicate
    fr = memory_relay.client("fr-oclcc")
    (item,) = await fr.poll()
    assert item.type == "envelope" and item.envelope == sealed.token
    assert await fr.ack([item.seq]) == 1
    assert await fr.poll() == []


async def test_nonces_are_remembered_until_they_expire() -> None:
    now_s = [1_800_000_000.0]
    store = MemoryStore(clock_s=lambda: now_s[0])
    await store.start()
    assert await store.claim_nonce("n1", 1_800_000_300) is True
    assert await store.claim_nonce("n1", 1_800_000_300) is False  # a replay
    assert await store.claim_nonce("n2", 1_800_000_100) is True
    now_s[0] = 1_800_000_200.0  # n2 has expired, n1 has not
    assert await store.claim_nonce("n2", 1_800_000_500) is True
    assert await store.claim_nonce("n1", 1_800_000_500) is False
    await store.close()
