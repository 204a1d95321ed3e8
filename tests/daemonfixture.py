"""A real daemon (clients.daemon.Daemon) on the test's loop, against an in-process relay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from clients.config import ClientSettings
from clients.daemon import Daemon
from keys.encoding import b64e
from tests.relayfixture import RelayEnv


@asynccontextmanager
async def running_daemon(
    relay: RelayEnv, aid: str, data_dir: Path, **overrides: object
) -> AsyncIterator[Daemon]:
    """``aid``'s daemon, connected (within 10 s); stopped and awaited on exit."""
    settings = ClientSettings(
        relay_url=relay.base_url,
        root_key=b64e(relay.net.root.signing_key().public),
        data_dir=data_dir,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        **overrides,  # type: ignore[arg-type]
    )
    daemon = Daemon(settings, relay.net[aid], clock=relay.clock)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        async with asyncio.timeout(10):
            await daemon.connected.wait()
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
