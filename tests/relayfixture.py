"""An in-process relay on a real socket, for API tests: real SQLite, real crypto.

The clock is injected (``FakeClock``) and shared by the relay and every client, so
request signatures, expiry and deadlines are exercised without sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from clients.client import RelayClient
from keys.encoding import b64e
from keys.keystore import save_keystore
from relay.app import create_app, start_serving
from relay.settings import RelaySettings
from relay.store.base import Store
from tests.netfixture import NOW, Network
from tests.waiting import until as until  # re-exported for test_redis_store.py (moved later)

RELAY_PASS = "relay test passphrase"


@dataclass
class FakeClock:
    now: int = NOW

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@dataclass
class RelayEnv:
    net: Network
    settings: RelaySettings
    clock: FakeClock
    server: TestServer | None = None
    clients: dict[str, RelayClient] = field(default_factory=dict)
    url: str | None = None
    app: web.Application | None = None
    """Set when the relay runs on its production site (``start_guarded_relay``)."""

    @property
    def base_url(self) -> str:
        if self.url is not None:
            return self.url
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def escalate_past_release(self) -> None:
        """Run the relay's escalation to the default urgent policy's release step (10 min:
        remind; 30 min: release, deputies and the duty desk told)."""
        from relay.api.state import CORE

        assert self.server is not None
        core = self.server.app[CORE]
        self.clock.advance(10 * 60_000)
        await core.escalation.tick()
        self.clock.advance(20 * 60_000)
        await core.escalation.tick()

    def client(self, aid: str) -> RelayClient:
        if aid not in self.clients:
            self.clients[aid] = RelayClient(self.base_url, self.net[aid], clock=self.clock)
        return self.clients[aid]


def write_relay_files(tmp: Path, net: Network) -> RelaySettings:
    """Keystore, directory folder and settings for a relay of ``net`` (blocking I/O)."""
    (tmp / "directory").mkdir(parents=True, exist_ok=True)
    for d in net.history:
        (tmp / "directory" / f"v{d.version:04d}.jws").write_text(d.token + "\n")
    save_keystore(tmp / "relay.ks", net.relay, RELAY_PASS, strength="test", overwrite=True)
    (tmp / "relay.pass").write_text(RELAY_PASS)
    return RelaySettings(
        data_dir=tmp / "data",
        directory_dir=tmp / "directory",
        root_key=b64e(net.root.signing_key().public),
        keystore=tmp / "relay.ks",
        keystore_passphrase_file=tmp / "relay.pass",
    )


async def start_relay(
    env: RelayEnv, *, store: Store | None = None
) -> AsyncIterator[RelayEnv]:  # pragma: no cover - used as a fixture body
    app = create_app(env.settings, store=store, clock=env.clock)
    env.server = TestServer(app, host="127.0.0.1")
    await env.server.start_server()
    try:
        yield env
    finally:
        for c in env.clients.values():
            await c.close()
        await env.server.close()


async def start_guarded_relay(
    env: RelayEnv, *, tls: bool = False
) -> AsyncIterator[RelayEnv]:  # pragma: no cover
    """The relay on the site ``relay serve`` uses (connection guard, deadlines)."""
    app = create_app(env.settings, clock=env.clock)
    runner, site = await start_serving(app, env.settings, host="127.0.0.1", port=0, tls=tls)
    env.url, env.app = f"{'https' if tls else 'http'}://127.0.0.1:{site.port}", app
    try:
        yield env
    finally:
        for c in env.clients.values():
            await c.close()
        await runner.cleanup()
