"""The outbox: what this authority has to tell the relay and could not yet.

Two queues, one table each (schema ``0002-outbox.sql``), both worked by the daemon
(:mod:`clients.outbox`):

* ``inbox.outbox`` (:class:`Outbox`): sealed envelopes ``notice send`` could not submit
  (the relay unreachable or unavailable). Each is ``queued`` until the relay accepts it
  (``submitted``), it expires first (``expired``: never submitted), or the relay refuses
  it (``failed``).
* ``inbox.uploads`` (:class:`ReceiptUploads`): signed ``acknowledged``/``rejected``
  receipts of decisions taken here, ``pending`` until the relay confirms them (``sent``)
  or refuses them (``failed``).

A retry is harmless: the relay recognises an envelope by its message id and a receipt
by its content. Every state change is one committed transaction.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from clients.store.db import Database, InboxError, dumps, transaction

__all__ = [
    "Outbox",
    "OutboxEntry",
    "OutboxState",
    "ReceiptUpload",
    "ReceiptUploads",
    "UploadState",
    "backoff_ms",
]

OutboxState = Literal["queued", "submitted", "expired", "failed"]
UploadState = Literal["pending", "sent", "failed"]


def backoff_ms(attempts: int, rand: float, *, base_ms: float = 1000, cap_ms: float = 30_000) -> int:
    """Full jitter: a delay uniformly in ``[0, min(cap, base * 2**(attempts-1)))``.

    ``attempts`` failed attempts so far (at least 1); ``rand`` in [0, 1).
    """
    ceiling = min(cap_ms, base_ms * 2 ** max(0, min(attempts - 1, 30)))
    return int(ceiling * rand)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: str
    token: str
    expires: int
    queued_at: int
    files: tuple[tuple[str, str], ...]
    """(SHA-256, local path) of each encrypted attachment to upload before the envelope."""
    state: OutboxState
    attempts: int
    next_attempt_at: int | None
    last_error: str | None
    done_at: int | None


@dataclass(frozen=True, slots=True)
class ReceiptUpload:
    msg_id: str
    token: str
    status: str
    created_at: int
    state: UploadState
    attempts: int
    next_attempt_at: int | None
    last_error: str | None
    done_at: int | None


def _entry(r: sqlite3.Row) -> OutboxEntry:
    return OutboxEntry(
        id=r["id"],
        token=r["token"],
        expires=r["expires"],
        queued_at=r["queued_at"],
        files=tuple((str(h), str(p)) for h, p in json.loads(r["files"])),
        state=r["state"],
        attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"],
        last_error=r["last_error"],
        done_at=r["done_at"],
    )


def _upload(r: sqlite3.Row) -> ReceiptUpload:
    return ReceiptUpload(
        msg_id=r["msg_id"],
        token=r["token"],
        status=r["status"],
        created_at=r["created_at"],
        state=r["state"],
        attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"],
        last_error=r["last_error"],
        done_at=r["done_at"],
    )


class _Queue:
    """What both queues share: due items, one attempt's outcome, waking them all."""

    table: str
    key: str
    open_state: str

    def __init__(self, db: Database) -> None:
        self._db = db

    async def _finish(self, key: str, state: str, error: str | None, at: int) -> None:
        """A final outcome of an open item (no-op if it is no longer open)."""
        sql = (
            f"UPDATE {self.table} SET state = ?, last_error = ?, done_at = ?, "
            f"next_attempt_at = NULL, attempts = attempts + ? "
            f"WHERE {self.key} = ? AND state = '{self.open_state}'"
        )
        counts = 0 if state == "expired" else 1

        def tx(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(sql, (state, error, at, counts, key))

        await self._db.run(tx)

    async def retry(
        self, key: str, *, error: str, now: int, rand: float, cap_ms: int = 30_000
    ) -> int:
        """Record a failed attempt; the next one is due after a full-jitter backoff.
        ``rand`` is in [0, 1). Returns when it is due."""
        r = rand

        def tx(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                row = conn.execute(
                    f"SELECT attempts FROM {self.table} WHERE {self.key} = ?",
                    (key,),
                ).fetchone()
                if row is None:
                    raise InboxError(f"nothing queued for {key}")
                attempts = int(row["attempts"]) + 1
                due = now + backoff_ms(attempts, r, cap_ms=cap_ms)
                conn.execute(
                    f"UPDATE {self.table} SET attempts = ?, next_attempt_at = ?, "
                    f"last_error = ? WHERE {self.key} = ? AND state = '{self.open_state}'",
                    (attempts, due, error[:500], key),
                )
                return due

        return await self._db.run(tx)

    async def wake(self, now: int) -> int:
        """Make every open item due at ``now`` (the relay answers again); how many."""

        def tx(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                return conn.execute(
                    f"UPDATE {self.table} SET next_attempt_at = ? "
                    f"WHERE state = '{self.open_state}' AND next_attempt_at > ?",
                    (now, now),
                ).rowcount

        return await self._db.run(tx)


class Outbox(_Queue):
    """Sealed envelopes waiting for the relay (``inbox.outbox``)."""

    table, key, open_state = "outbox", "id", "queued"

    async def queue(
        self,
        msg_id: str,
        token: str,
        *,
        expires: int,
        now: int,
        files: Sequence[tuple[str, str]] = (),
    ) -> bool:
        """Queue a sealed envelope, due at once, with the encrypted attachment ``files``
        (SHA-256, path) to upload first. True if new (queueing again: False)."""
        listed = dumps([[h, p] for h, p in files])

        def tx(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                cur = conn.execute(
                    "INSERT INTO outbox (id, token, expires, queued_at, next_attempt_at, files) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (msg_id, token, expires, now, now, listed),
                )
                if cur.rowcount:
                    return True
                row = conn.execute("SELECT token FROM outbox WHERE id = ?", (msg_id,)).fetchone()
            if row["token"] != token:
                raise InboxError(f"message {msg_id} is already queued as another envelope")
            return False

        return await self._db.run(tx)

    async def due(self, now: int, *, limit: int = 100) -> builtins.list[OutboxEntry]:
        """Queued envelopes whose next attempt is due, oldest queued first."""

        def q(conn: sqlite3.Connection) -> builtins.list[OutboxEntry]:
            rows = conn.execute(
                "SELECT * FROM outbox WHERE state = 'queued' AND next_attempt_at <= ? "
                "ORDER BY queued_at, id LIMIT ?",
                (now, limit),
            ).fetchall()
            return [_entry(r) for r in rows]

        return await self._db.run(q)

    async def get(self, msg_id: str) -> OutboxEntry | None:
        def q(conn: sqlite3.Connection) -> OutboxEntry | None:
            row = conn.execute("SELECT * FROM outbox WHERE id = ?", (msg_id,)).fetchone()
            return None if row is None else _entry(row)

        return await self._db.run(q)

    async def mark_submitted(self, msg_id: str, *, at: int) -> None:
        await self._finish(msg_id, "submitted", None, at)

    async def mark_expired(self, msg_id: str, *, at: int) -> None:
        await self._finish(msg_id, "expired", "expired before the relay could take it", at)

    async def mark_failed(self, msg_id: str, *, error: str, at: int) -> None:
        await self._finish(msg_id, "failed", error[:500], at)


class ReceiptUploads(_Queue):
    """Signed decision receipts waiting for the relay's confirmation (``inbox.uploads``)."""

    table, key, open_state = "receipt_uploads", "msg_id", "pending"

    async def add(self, msg_id: str, token: str, *, status: str, now: int) -> bool:
        """Queue the receipt of a decision, due at once. True if new."""

        def tx(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                return (
                    conn.execute(
                        "INSERT INTO receipt_uploads (msg_id, token, status, created_at, "
                        "next_attempt_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (msg_id) DO NOTHING",
                        (msg_id, token, status, now, now),
                    ).rowcount
                    == 1
                )

        return await self._db.run(tx)

    async def due(self, now: int, *, limit: int = 100) -> builtins.list[ReceiptUpload]:
        def q(conn: sqlite3.Connection) -> builtins.list[ReceiptUpload]:
            rows = conn.execute(
                "SELECT * FROM receipt_uploads WHERE state = 'pending' AND next_attempt_at <= ? "
                "ORDER BY created_at, msg_id LIMIT ?",
                (now, limit),
            ).fetchall()
            return [_upload(r) for r in rows]

        return await self._db.run(q)

    async def get(self, msg_id: str) -> ReceiptUpload | None:
        def q(conn: sqlite3.Connection) -> ReceiptUpload | None:
            row = conn.execute(
                "SELECT * FROM receipt_uploads WHERE msg_id = ?", (msg_id,)
            ).fetchone()
            return None if row is None else _upload(row)

        return await self._db.run(q)

    async def unconfirmed(self) -> builtins.list[ReceiptUpload]:
        """Every upload not confirmed by the relay (pending or failed), oldest first."""

        def q(conn: sqlite3.Connection) -> builtins.list[ReceiptUpload]:
            rows = conn.execute(
                "SELECT * FROM receipt_uploads WHERE state != 'sent' ORDER BY created_at"
            ).fetchall()
            return [_upload(r) for r in rows]

        return await self._db.run(q)

    async def mark_sent(self, msg_id: str, *, at: int) -> None:
        await self._finish(msg_id, "sent", None, at)

    async def mark_failed(self, msg_id: str, *, error: str, at: int) -> None:
        await self._finish(msg_id, "failed", error[:500], at)

    async def resend(self, msg_id: str, *, now: int) -> None:
        """Make an upload due again, whatever became of it (the user repeats the decision)."""

        def tx(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    "UPDATE receipt_uploads SET state = 'pending', next_attempt_at = ?, "
                    "done_at = NULL WHERE msg_id = ? AND state != 'sent'",
                    (now, msg_id),
                )

        await self._db.run(tx)
