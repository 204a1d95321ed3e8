"""Request nonces that outlive the relay process: replay protection across a restart.

The relay's in-memory :class:`keys.httpsig.NonceCache` refuses a signed request seen
twice while the process runs. A restart empties it, and a request captured within its
signature's validity window (a few minutes) would work again. This journal remembers
every accepted nonce until its signature expires, in its own SQLite file beside the
store's, so a restarted relay refuses the replay too.

Each claim is an ``INSERT OR IGNORE`` whose answer the request waits for; claims made
while the previous transaction commits go into the next one (group commit), on one
dedicated thread, never on the event loop. The file uses ``synchronous=OFF``: a commit
is handed to the operating system (written, never fsynced) before the request goes on,
so claims cost no fsync. That survives the relay process being killed (``kill -9``
included); it does not survive a crash of the operating system or a power loss (then
captured requests younger than their validity window, at most ``clock_skew + max
validity``, could be replayed once).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from relay.store.base import StoreUnavailableError

PURGE_EVERY_S = 60
"""How often expired nonces are deleted (at most once per this many seconds of claims)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at);
"""


class NonceJournal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-nonces")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[str, int, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._purged_at = 0

    async def start(self) -> None:
        def open_db() -> None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.executescript(_SCHEMA)
            self._conn = conn

        await asyncio.get_running_loop().run_in_executor(self._executor, open_db)

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flusher)
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)

    async def claim(self, nonce: str, expires_at: int) -> bool:
        """Remember ``nonce`` until ``expires_at`` (Unix seconds); False if already seen."""
        if self._conn is None:
            raise StoreUnavailableError("the nonce journal is not open")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((nonce, expires_at, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="nonce-journal")
        return await fut

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                fresh = await loop.run_in_executor(
                    self._executor, self._write, [(n, e) for n, e, _ in batch]
                )
            except (sqlite3.Error, OSError) as exc:
                err = StoreUnavailableError(f"nonce journal {self.path}: {exc}")
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for (*_, fut), new in zip(batch, fresh, strict=True):
                if not fut.done():
                    fut.set_result(new)

    def _write(self, claims: list[tuple[str, int]]) -> list[bool]:
        conn = self._conn
        if conn is None:
            raise sqlite3.ProgrammingError("closed")
        out = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            newest = 0
            for nonce, expires_at in claims:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO nonces (nonce, expires_at) VALUES (?, ?)",
                    (nonce, expires_at),
                )
                out.append(cur.rowcount == 1)
                newest = max(newest, expires_at)
            if newest - self._purged_at >= PURGE_EVERY_S:
                # Signatures live minutes: anything expired well before the newest claim
                # can never be presented again (the relay refuses expired signatures).
                conn.execute("DELETE FROM nonces WHERE expires_at < ?", (newest - 3600,))
                self._purged_at = newest
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return out
