"""Sent messages and the receipts that came back for them (deduplicated by token).

A sent message is found by its id through the primary key, and its latest receipt
through the ``receipts_by_message`` index: no lookup scans the table.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clients.store.db import Database, InboxError, dumps, transaction
from keys.lifecycle import state_from_receipts

__all__ = ["SELECT_SENT_BY_ID", "SentMessage", "SentMessages", "StoredReceipt"]


@dataclass(frozen=True, slots=True)
class SentMessage:
    id: str
    to: tuple[str, ...]
    envelope_hash: str
    created: int
    priority: str
    summary: str
    last_status: str | None
    """The status of the latest receipt recorded for it (by ``at``), if any."""
    last_status_at: int | None
    outbox_state: str | None = None
    """What became of it in the outbox (queued, submitted, expired, failed), if it was queued."""
    outbox_error: str | None = None
    statuses: tuple[str, ...] = ()
    """The status of every receipt recorded for it, in the order received."""

    @property
    def state(self) -> str:
        """``queued`` (waiting in the outbox), ``sent`` (no answer known), or the state
        its receipts imply (:func:`keys.lifecycle.state_from_receipts`); ``expired`` or
        ``failed`` for an envelope the outbox never got to the relay."""
        if self.outbox_state in ("expired", "failed") and "accepted" not in self.statuses:
            return self.outbox_state
        initial = "queued" if self.outbox_state == "queued" else "sent"
        return state_from_receipts(self.statuses, initial=initial)


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    msg_id: str
    token: str
    status: str
    signer: str
    at: int


_SELECT_SENT = (
    "SELECT s.*, r.status AS last_status, r.at AS last_status_at, "
    "o.state AS outbox_state, o.last_error AS outbox_error, "
    # In the index's order (by time); the state they imply does not depend on it.
    "(SELECT group_concat(status, ',') FROM receipts WHERE msg_id = s.id) AS statuses "
    "FROM sent s "
    "LEFT JOIN receipts r ON r.token_hash = ("
    "  SELECT token_hash FROM receipts WHERE msg_id = s.id "
    "  ORDER BY at DESC, rowid DESC LIMIT 1) "
    "LEFT JOIN outbox o ON o.id = s.id "
)

SELECT_SENT_BY_ID = _SELECT_SENT + "WHERE s.id = ?"
"""One sent message with its latest receipt: a primary-key and an index lookup."""


def _sent(r: sqlite3.Row) -> SentMessage:
    return SentMessage(
        id=r["id"],
        to=tuple(json.loads(r["recipients"])),
        envelope_hash=r["envelope_hash"],
        created=r["created"],
        priority=r["priority"],
        summary=r["summary"],
        last_status=r["last_status"],
        last_status_at=r["last_status_at"],
        outbox_state=r["outbox_state"],
        outbox_error=r["outbox_error"],
        statuses=tuple(r["statuses"].split(",")) if r["statuses"] else (),
    )


class SentMessages:
    """What this authority sent, and the receipts about it (``inbox.sent``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        msg_id: str,
        *,
        to: Sequence[str],
        envelope_hash: str,
        created: int,
        priority: str,
        summary: str,
    ) -> bool:
        """Remember a message we sent. True if new; recording it again is not an error.

        Recording the same id with a different envelope hash raises :class:`InboxError`.
        """
        recipients = dumps(builtins.list(to))

        def tx(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                cur = conn.execute(
                    "INSERT INTO sent (id, recipients, envelope_hash, created, priority, summary) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (msg_id, recipients, envelope_hash, created, priority, summary),
                )
                if cur.rowcount:
                    return True
                row = conn.execute(
                    "SELECT envelope_hash FROM sent WHERE id = ?", (msg_id,)
                ).fetchone()
            if row["envelope_hash"] != envelope_hash:
                raise InboxError(f"message {msg_id} was already recorded as another envelope")
            return False

        return await self._db.run(tx)

    async def record_receipt(
        self, msg_id: str, token: str, *, status: str, signer: str, at: int
    ) -> bool:
        """Store a (verified) receipt; True if new, False if that token is already stored.

        The message need not have been recorded with :meth:`record` first: a receipt can
        overtake the sender's own bookkeeping.
        """
        token_hash = hashlib.sha256(token.encode("utf-8")).hexdigest()

        def tx(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                cur = conn.execute(
                    "INSERT INTO receipts (token_hash, msg_id, token, status, signer, at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING",
                    (token_hash, msg_id, token, status, signer, at),
                )
                return cur.rowcount == 1

        return await self._db.run(tx)

    async def record_receipts(
        self, receipts: Sequence[tuple[str, str, str, str, int, str]]
    ) -> builtins.list[bool | None]:
        """Store many (verified) receipts in one transaction (group commit): each is
        ``(msg_id, token, status, signer, at, envelope_hash)``. One result each: True if
        new, False if that token was stored before, None if the message was recorded
        as another envelope (the receipt is dropped)."""
        rows = builtins.list(receipts)

        def tx(conn: sqlite3.Connection) -> builtins.list[bool | None]:
            out: builtins.list[bool | None] = []
            with transaction(conn):
                for msg_id, token, status, signer, at, env in rows:
                    known = conn.execute(
                        "SELECT envelope_hash FROM sent WHERE id = ?", (msg_id,)
                    ).fetchone()
                    if known is not None and known["envelope_hash"] != env:
                        out.append(None)
                        continue
                    cur = conn.execute(
                        "INSERT INTO receipts (token_hash, msg_id, token, status, signer, at) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING",
                        (
                            hashlib.sha256(token.encode("utf-8")).hexdigest(),
                            msg_id,
                            token,
                            status,
                            signer,
                            at,
                        ),
                    )
                    out.append(cur.rowcount == 1)
            return out

        return await self._db.run(tx) if rows else []

    async def get(self, msg_id: str) -> SentMessage | None:
        """One message we sent, with its latest receipt status, or None (by primary key)."""

        def q(conn: sqlite3.Connection) -> SentMessage | None:
            row = conn.execute(SELECT_SENT_BY_ID, (msg_id,)).fetchone()
            return None if row is None else _sent(row)

        return await self._db.run(q)

    async def list(self, limit: int = 50) -> builtins.list[SentMessage]:
        """Messages we sent, newest first, each with its latest receipt status."""

        def q(conn: sqlite3.Connection) -> builtins.list[SentMessage]:
            params: tuple[Any, ...] = (limit,)
            rows = conn.execute(
                _SELECT_SENT + "ORDER BY s.created DESC, s.id DESC LIMIT ?", params
            ).fetchall()
            return [_sent(r) for r in rows]

        return await self._db.run(q)

    async def timeline(self, msg_id: str) -> builtins.list[StoredReceipt]:
        """Every receipt recorded for ``msg_id``, oldest first."""

        def q(conn: sqlite3.Connection) -> builtins.list[StoredReceipt]:
            rows = conn.execute(
                "SELECT msg_id, token, status, signer, at FROM receipts WHERE msg_id = ? "
                "ORDER BY at, rowid",
                (msg_id,),
            ).fetchall()
            return [
                StoredReceipt(
                    msg_id=r["msg_id"],
                    token=r["token"],
                    status=r["status"],
                    signer=r["signer"],
                    at=r["at"],
                )
                for r in rows
            ]

        return await self._db.run(q)
