"""The delivery pump against a real SQLite store: a resync during a read is not lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from relay.core.delivery import Delivery, Hub, Session
from relay.store.base import QueueItem
from relay.store.sqlite import SQLiteStore
from tests.netfixture import NOW, Network
from tests.storefixture import message


class GatedStore(SQLiteStore):
    """The real store, with a gate that holds the next queue read until released."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reading = asyncio.Event()
        self.release = asyncio.Event()
        self.gate = False

    async def pending(self, recipient: str, *, after: int, limit: int) -> list[QueueItem]:
        items = await super().pending(recipient, after=after, limit=limit)
        if self.gate:
            self.gate = False
            self.reading.set()
            await self.release.wait()
        return items


async def test_a_resync_during_a_store_read_is_not_lost(tmp_path: Path, net: Network) -> None:
    store = GatedStore(tmp_path / "relay.sqlite3")
    await store.start()
    delivery = Delivery(store=store, hub=Hub(), clock=lambda: NOW)
    sent: list[int] = []
    got_item = asyncio.Event()

    async def send(items: list[QueueItem]) -> None:
        sent.extend(i.seq for i in items)
        got_item.set()

    session = Session(authority="fr-oclcc", send=send)
    delivery.hub.attach(session)
    store.gate = True
    pump = asyncio.create_task(delivery.pump(session))
    try:
        await asyncio.wait_for(store.reading.wait(), 5)  # the first read is in flight
        # Another instance commits an item whose push this instance missed; the listener
        # asks every session to re-read its queue.
        (result,) = await store.accept([message()])
        session.resync()
        store.release.set()
        await asyncio.wait_for(got_item.wait(), 5)
        assert sent == list(result.queued)
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        await store.close()
