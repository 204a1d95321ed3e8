"""Replay after a restart: a signed request captured on the wire never works twice, not
even against a relay restarted on the same data folder (the SQLite relay used to keep its
nonces only in memory). The Redis store keeps them in Redis (SET NX EX), shared by every
instance; the store contract suite checks both remember a nonce across a reopen."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from relay.app import create_app
from tests.netfixture import Network
from tests.relayfixture import FakeClock, RelayEnv, write_relay_files


async def _serve(env: RelayEnv, port: int = 0) -> TestServer:
    server = TestServer(create_app(env.settings, clock=env.clock), host="127.0.0.1", port=port)
    await server.start_server()
    return server


async def test_a_captured_request_and_upgrade_are_refused_after_a_restart_on_sqlite(
    tmp_path: Path, net: Network
) -> None:
    await replayed_after_restart(tmp_path, net, {"store": "sqlite"})


async def replayed_after_restart(tmp_path: Path, net: Network, update: dict[str, object]) -> None:
    base = await asyncio.to_thread(write_relay_files, tmp_path, net)
    settings = base.model_copy(update=update)
    env = RelayEnv(net=net, settings=settings, clock=FakeClock())
    env.server = await _serve(env)
    port = env.server.port
    client = env.client("fr-oclcc")
    inbox_url = client.url("/v1/inbox")
    stream_url = client.url("/v1/stream")
    # What an attacker on the path records: the exact headers of two signed requests.
    poll_headers = client.signed_headers("GET", inbox_url, b"")
    upgrade_headers = client.signed_headers("GET", stream_url, b"")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(inbox_url, headers=poll_headers) as resp:
                assert resp.status == 200
            ws = await http.ws_connect(stream_url, headers=upgrade_headers)
            await ws.close()
            # Replayed to the same process: refused by the in-memory cache already.
            async with http.get(inbox_url, headers=poll_headers) as resp:
                assert resp.status == 401
                assert (await resp.json())["code"] == "replayed_nonce"
    finally:
        await client.close()
        env.clients.clear()
        await env.server.close()
    # The relay restarts on the same data folder and port, within the signatures' window.
    env.clock.advance(5_000)
    env.server = await _serve(env, port)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(inbox_url, headers=poll_headers) as resp:
                body = await resp.json()
                assert (resp.status, body["code"]) == (401, "replayed_nonce")
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(stream_url, headers=upgrade_headers)
            assert refused.value.status == 401
            # A freshly signed request works: only the replay is refused.
            assert await env.client("fr-oclcc").poll() == []
    finally:
        for c in env.clients.values():
            await c.close()
        await env.server.close()
