"""Retention in the local inbox (``inbox.retention``): closed messages older than the
configured period are forgotten, after their evidence has been handed to the caller.

*Closed*, for a received message: acknowledged or rejected here (and its decision
receipt confirmed by the relay), or expired without a decision. For a sent message: a receipt
closed it (acknowledged, rejected, expired), or the outbox never got it to the relay
(expired, failed). Age is counted from when it was received, or created.

Pruning is two steps so that no evidence is lost to a crash: :meth:`Retention.due`
reads a batch with everything it proves (envelope, decision, receipts), the caller
archives it durably, then :meth:`Retention.forget` deletes exactly those messages (and
their receipts, events, hook jobs and outbox rows) in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clients.store.db import Database, transaction

__all__ = ["Evidence", "Forgotten", "Retention"]

_CLOSING = ("acknowledged", "rejected", "expired")


@dataclass(frozen=True, slots=True)
class Evidence:
    """One closed message and what it proves, as archived before it is forgotten."""

    kind: str
    """``received`` or ``sent``."""
    msg_id: str
    at: int
    """When it was received (received) or created (sent), Unix ms."""
    record: dict[str, Any] = field(default_factory=dict)
    """JSON-ready: the message's fields and every signed token about it."""


@dataclass(frozen=True, slots=True)
class Forgotten:
    received_ids: tuple[str, ...] = ()
    """The received messages forgotten (their downloaded files go too)."""
    sent: int = 0
    receipts: int = 0
    events: int = 0

    @property
    def received(self) -> int:
        return len(self.received_ids)


def _received(conn: sqlite3.Connection, before: int, now: int, limit: int) -> list[Evidence]:
    rows = conn.execute(
        "SELECT m.*, u.token AS decision_token FROM messages m "
        "LEFT JOIN receipt_uploads u ON u.msg_id = m.id "
        "WHERE m.received_at < ? AND (m.state != 'new' OR m.expires < ?) "
        "AND COALESCE(u.state, '') != 'pending' ORDER BY m.received_at LIMIT ?",
        (before, now, limit),
    ).fetchall()
    out = []
    for r in rows:
        record = {
            "id": r["id"],
            "sender": r["sender"],
            "to": json.loads(r["recipients"]),
            "role": r["role"],
            "priority": r["priority"],
            "created": r["created"],
            "expires": r["expires"],
            "received_at": r["received_at"],
            "handling": json.loads(r["handling"]),
            "content": json.loads(r["content"]),
            "attachments": json.loads(r["attachments"]),
            "envelope_hash": r["envelope_hash"],
            "envelope": r["token"],
            "state": r["state"],
            "acknowledged_by": r["acknowledged_by"],
            "acknowledged_at": r["acknowledged_at"],
            "rejected_reason": r["rejected_reason"],
            "decided_at": r["decided_at"],
            "decision_receipt": r["decision_token"],
        }
        out.append(Evidence("received", r["id"], r["received_at"], record))
    return out


def _sent(conn: sqlite3.Connection, before: int, limit: int) -> list[Evidence]:
    marks = ",".join("?" * len(_CLOSING))
    rows = conn.execute(
        "SELECT s.*, o.token AS envelope, o.state AS outbox_state FROM sent s "
        "LEFT JOIN outbox o ON o.id = s.id WHERE s.created < ? AND ("
        f"EXISTS (SELECT 1 FROM receipts r WHERE r.msg_id = s.id AND r.status IN ({marks})) "
        "OR o.state IN ('expired', 'failed')) ORDER BY s.created LIMIT ?",
        (before, *_CLOSING, limit),
    ).fetchall()
    out = []
    for r in rows:
        receipts = conn.execute(
            "SELECT status, signer, at, token FROM receipts WHERE msg_id = ? ORDER BY at, rowid",
            (r["id"],),
        ).fetchall()
        record = {
            "id": r["id"],
            "to": json.loads(r["recipients"]),
            "created": r["created"],
            "priority": r["priority"],
            "summary": r["summary"],
            "envelope_hash": r["envelope_hash"],
            "envelope": r["envelope"],
            "outbox_state": r["outbox_state"],
            "receipts": [dict(x) for x in receipts],
        }
        out.append(Evidence("sent", r["id"], r["created"], record))
    return out


def _forget(
    conn: sqlite3.Connection, received: list[str], sent: list[str], before: int, now: int
) -> Forgotten:
    with transaction(conn):
        # Only those still closed: a decision taken since due() keeps its message (its
        # receipt upload is pending).
        received = [
            row[0]
            for row in conn.execute(
                "SELECT m.id FROM messages m WHERE m.id IN (SELECT value FROM json_each(?)) "
                "AND (m.state != 'new' OR m.expires < ?) AND NOT EXISTS (SELECT 1 FROM "
                "receipt_uploads u WHERE u.msg_id = m.id AND u.state = 'pending')",
                (json.dumps(received), now),
            )
        ]
        ids = json.dumps([*received, *sent])
        inside = "IN (SELECT value FROM json_each(?))"
        events = conn.execute(f"DELETE FROM events WHERE msg_id {inside}", (ids,)).rowcount
        # Events about other authorities' messages (escalation notices) age out alone.
        events += conn.execute("DELETE FROM events WHERE at < ?", (before,)).rowcount
        conn.execute(f"DELETE FROM hook_jobs WHERE msg_id {inside}", (ids,))
        conn.execute(
            "DELETE FROM hook_jobs WHERE state != 'pending' AND NOT EXISTS (SELECT 1 FROM "
            "events e WHERE e.event = hook_jobs.event AND e.msg_id = hook_jobs.msg_id "
            "AND e.occurrence = hook_jobs.occurrence) AND NOT EXISTS (SELECT 1 FROM messages "
            "m WHERE m.id = hook_jobs.msg_id)"
        )
        mine = json.dumps(received)
        conn.execute(f"DELETE FROM receipt_uploads WHERE msg_id {inside}", (mine,))
        conn.execute(f"DELETE FROM messages WHERE id {inside}", (mine,))
        theirs = json.dumps(sent)
        receipts = conn.execute(f"DELETE FROM receipts WHERE msg_id {inside}", (theirs,)).rowcount
        conn.execute(f"DELETE FROM outbox WHERE id {inside}", (theirs,))
        n_sent = conn.execute(f"DELETE FROM sent WHERE id {inside}", (theirs,)).rowcount
    return Forgotten(tuple(received), n_sent, receipts, events)


class Retention:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def due(self, before: int, *, now: int, limit: int) -> list[Evidence]:
        """Up to ``limit`` closed received and up to ``limit`` closed sent messages older
        than ``before`` (Unix ms), oldest first, each with its evidence. A received
        message never decided is closed once it expired (before ``now``)."""

        def q(conn: sqlite3.Connection) -> list[Evidence]:
            return _received(conn, before, now, limit) + _sent(conn, before, limit)

        return await self._db.run(q)

    async def forget(
        self, evidence: Sequence[Evidence], *, before: int, now: int | None = None
    ) -> Forgotten:
        """Delete the messages of ``evidence`` that are still closed (as of ``now``) with
        their receipts, events, hook jobs and outbox rows, and every event older than
        ``before``, in one transaction."""
        received = [e.msg_id for e in evidence if e.kind == "received"]
        sent = [e.msg_id for e in evidence if e.kind == "sent"]
        at = before if now is None else now
        return await self._db.run(lambda conn: _forget(conn, received, sent, before, at))
