"""The local audit trail (``inbox.audit``): who did what, and when.

Every action a person takes through the officer console or the ``notice`` command line
is one row: the person's name, one of :data:`AUDIT_ACTIONS`, the message it was about (if
any) and a short detail (how they signed in, from where, the reason of a rejection, ...).
The trail is append-only: :meth:`AuditTrail.record` only inserts, and nothing changes a
row; only :meth:`AuditTrail.prune` deletes, for the daemon's retention
(:mod:`clients.retention`), the rows older than the retention period. ``seq`` never
repeats, so a gap shows where rows were pruned.

Actions:

* ``signed_in``, ``signed_out``, ``sign_in_failed``: the officer console's sessions;
* ``opened``, ``downloaded``: a received message shown, an attachment fetched;
* ``acknowledged``, ``rejected``: a decision on a received message;
* ``sent``: a message sent; ``exported_evidence``: an evidence bundle written.
"""

from __future__ import annotations

import builtins
import sqlite3
from dataclasses import dataclass
from typing import Any, Literal, get_args

from clients.store.db import Database, InboxError, transaction
from clients.store.received import MAX_PERSON
from keys.encoding import is_uuid7

__all__ = ["AUDIT_ACTIONS", "MAX_DETAIL", "AuditAction", "AuditEntry", "AuditTrail"]

AuditAction = Literal[
    "signed_in",
    "signed_out",
    "sign_in_failed",
    "opened",
    "downloaded",
    "acknowledged",
    "rejected",
    "sent",
    "exported_evidence",
]
AUDIT_ACTIONS: tuple[AuditAction, ...] = get_args(AuditAction)
MAX_DETAIL = 500
"""A longer detail is cut to this many characters."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded action."""

    seq: int
    """Increasing, never reused (a gap is where entries were pruned)."""
    at: int
    """When, Unix ms."""
    person: str
    action: AuditAction
    message_id: str | None
    detail: str


def _entry(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(
        seq=row["seq"],
        at=row["at"],
        person=row["person"],
        action=row["action"],
        message_id=row["message_id"],
        detail=row["detail"],
    )


class AuditTrail:
    """The audit trail of one inbox (``inbox.audit``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        *,
        person: str,
        action: AuditAction,
        at: int,
        message_id: str | None = None,
        detail: str = "",
    ) -> None:
        """Append one entry; committed before this returns. ``detail`` is cut to
        :data:`MAX_DETAIL` characters. A bad name, action, time or message id raises
        :class:`InboxError` and records nothing."""
        if not isinstance(person, str) or not 1 <= len(person) <= MAX_PERSON:
            raise InboxError(f"the person's name must be 1 to {MAX_PERSON} characters")
        if not person.strip():
            raise InboxError("the person's name must not be blank")
        if action not in AUDIT_ACTIONS:
            raise InboxError(f"unknown audit action {action!r}")
        if isinstance(at, bool) or not isinstance(at, int) or at < 0:
            raise InboxError("the time of an audit entry must be Unix milliseconds")
        if message_id is not None and not is_uuid7(message_id):
            raise InboxError("not a message id")
        if not isinstance(detail, str):
            raise InboxError("the detail of an audit entry must be text")
        row = (at, person, action, message_id, detail[:MAX_DETAIL])

        def tx(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    "INSERT INTO audit (at, person, action, message_id, detail) "
                    "VALUES (?, ?, ?, ?, ?)",
                    row,
                )

        await self._db.run(tx)

    async def list(
        self,
        *,
        limit: int = 100,
        person: str | None = None,
        message_id: str | None = None,
        since: int | None = None,
    ) -> builtins.list[AuditEntry]:
        """Up to ``limit`` entries, newest first; only those of ``person``, about
        ``message_id``, or recorded at or after ``since`` (Unix ms), when given."""
        if limit < 0:
            raise InboxError("limit must not be negative")
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        for column, op, value in (
            ("person", "=", person),
            ("message_id", "=", message_id),
            ("at", ">=", since),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""

        def q(conn: sqlite3.Connection) -> builtins.list[AuditEntry]:
            rows = conn.execute(
                f"SELECT * FROM audit {clause} ORDER BY at DESC, seq DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [_entry(r) for r in rows]

        return await self._db.run(q)

    async def prune(self, before: int) -> int:
        """Delete the entries recorded before ``before`` (Unix ms); how many went."""

        def tx(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                return int(conn.execute("DELETE FROM audit WHERE at < ?", (before,)).rowcount)

        return await self._db.run(tx)
