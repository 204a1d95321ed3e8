"""Stores and store inputs for the contract suite and the backend-specific store tests.

``FACTORIES`` has one entry per backend: a function from a location (a folder that stays
the same across a close and reopen) to an unstarted store. Adding a backend is one more
entry; every contract test runs on each of them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from keys.encoding import uuid7
from relay.store.base import NewMessage, ReceiptRecord, Store
from relay.store.memory import MemoryStore
from relay.store.redis import RedisStore
from relay.store.sqlite import SQLiteStore
from tests.netfixture import NOW
from tests.redisfixture import session_redis_url

DAY = 86_400_000
StoreFactory = Callable[[Path], Store]


def _memory(where: Path) -> Store:
    return MemoryStore()


def _sqlite(where: Path) -> Store:
    return SQLiteStore(where / "relay.sqlite3")


def _redis(where: Path) -> Store:
    # The session's private redis-server (tests/conftest.py), flushed before each test;
    # a reopen in the same test sees the same data.
    return RedisStore(session_redis_url())


FACTORIES: dict[str, StoreFactory] = {"memory": _memory, "sqlite": _sqlite, "redis": _redis}
DURABLE = frozenset({"sqlite", "redis"})
"""The backends whose data outlives a close and reopen (the memory store forgets)."""


@asynccontextmanager
async def opened(backend: str, where: Path) -> AsyncIterator[Store]:
    store = FACTORIES[backend](where)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def message(
    to: tuple[str, ...] = ("fr-oclcc",),
    *,
    fallbacks: tuple[str, ...] = (),
    sender: str = "it-tpc",
    msg_id: str | None = None,
    envelope: str | None = None,
    at: int = NOW,
    attachments: tuple[str, ...] = (),
) -> NewMessage:
    msg_id = msg_id or uuid7(ms=at)
    envelope = envelope or f"head-{msg_id}.payload-{os.urandom(8).hex()}.sig"
    env_hash = hashlib.sha256(envelope.encode()).hexdigest()
    return NewMessage(
        id=msg_id,
        sender=sender,
        to=to,
        fallbacks=fallbacks,
        envelope=envelope,
        env_hash=env_hash,
        created=at - 1000,
        expires=at + DAY,
        priority="urgent",
        ack_by=at + 3_600_000,
        accepted_at=at,
        accepted_receipt=f"accepted.{msg_id}.{env_hash[:16]}.{os.urandom(4).hex()}",
        attachments=attachments,
    )


def receipt(
    msg: NewMessage, signer: str = "fr-oclcc", status: str = "delivered", at: int = NOW + 5
) -> ReceiptRecord:
    token = f"receipt.{msg.id}.{signer}.{status}.{os.urandom(4).hex()}"
    return ReceiptRecord(
        msg_id=msg.id, status=status, signer=signer, at=at, token=token, received_at=at + 1
    )
