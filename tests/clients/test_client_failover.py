"""Client-side failover: a daemon given several relay URLs moves on when one fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clients.config import ClientSettings, ConfigError, load_client_settings
from clients.daemon import Daemon
from keys.encoding import b64e
from keys.envelope import seal
from tests.procfixture import free_port
from tests.relayfixture import RelayEnv
from tests.waiting import until

ROOT = "A" * 43


def test_relay_urls_from_the_environment_and_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CPAR_RELAY_URLS", '["http://relay-1:8080", "http://relay-2:8080"]')
    s = load_client_settings(root_key=ROOT)
    assert s.relay_endpoints == ["http://relay-1:8080", "http://relay-2:8080"]
    # Without relay_urls, the one relay_url.
    monkeypatch.delenv("CPAR_RELAY_URLS")
    assert load_client_settings(root_key=ROOT).relay_endpoints == ["http://127.0.0.1:8080"]


def test_a_relay_url_without_a_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match="relay_urls"):
        load_client_settings(root_key=ROOT, relay_urls=["http://ok:1", "relay-2:8080"])


async def test_the_daemon_rotates_to_the_next_relay_when_one_is_down(
    relay: RelayEnv, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = ClientSettings(
        relay_urls=[dead, relay.base_url],
        root_key=b64e(relay.net.root.signing_key().public),
        data_dir=tmp_path / "fr",
        reconnect_min_s=0.01,
        reconnect_max_s=0.05,
    )
    daemon = Daemon(settings, relay.net["fr-oclcc"], clock=relay.clock)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        async with asyncio.timeout(10):
            await daemon.connected.wait()
        assert daemon.client is not None and daemon.client.base_url == relay.base_url
        sealed = seal(
            relay.net["it-tpc"],
            relay.net.directory,
            to=["fr-oclcc"],
            content={"kind": "free_text", "text": "x"},
            now=relay.clock.now,
        )
        await relay.client("it-tpc").send(sealed.token)

        async def stored() -> bool:
            assert daemon.inbox is not None
            return await daemon.inbox.received.get(sealed.id) is not None

        await until(stored, 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
