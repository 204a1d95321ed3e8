"""The daemon's local inbox: one SQLite file, split by responsibility.

``await Inbox.open(path)`` opens (and migrates) the file and gives these stores over one
connection and one worker thread (:mod:`clients.store.db`):

* ``inbox.received`` (:mod:`clients.store.received`): messages received, verified and
  decrypted, deduplicated by id, each ``new`` until acknowledged or rejected;
* ``inbox.sent`` (:mod:`clients.store.sent`): messages this authority sent and the
  receipts about them;
* ``inbox.events`` and ``inbox.hook_jobs`` (:mod:`clients.store.hookjobs`): events a
  person or a hook must see (reminders, releases, escalation notices, ...) and the
  delivery-hook queue, one job per event and hook;
* ``inbox.outbox`` and ``inbox.uploads`` (:mod:`clients.store.outbox`): envelopes and
  decision receipts the relay has not taken yet (the daemon submits them);
* ``inbox.retention`` (:mod:`clients.store.retention`): closed messages past the
  retention period, with their evidence, and forgetting them;
* ``inbox.audit`` (:mod:`clients.store.audit`): the audit trail, every action a person
  took (signed in, opened, acknowledged, sent, ...) with their name.

Attachments are files beside the database (:meth:`Inbox.attachment_path`).
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from clients.store.audit import AuditAction, AuditEntry, AuditTrail
from clients.store.db import (
    SCHEMA_VERSION,
    AlreadyDecidedError,
    Database,
    InboxError,
    InboxSchemaError,
    Migration,
    UnknownMessageError,
    migrations,
)
from clients.store.hookjobs import (
    EVENTS,
    EventName,
    Events,
    HookJob,
    HookJobs,
    HookState,
    StoredEvent,
)
from clients.store.outbox import Outbox, OutboxEntry, ReceiptUpload, ReceiptUploads
from clients.store.received import InboxMessage, MessageState, ReceivedMessages
from clients.store.retention import Retention
from clients.store.sent import SentMessage, SentMessages, StoredReceipt
from keys.encoding import is_uuid7

__all__ = [
    "EVENTS",
    "SCHEMA_VERSION",
    "AlreadyDecidedError",
    "AuditAction",
    "AuditEntry",
    "AuditTrail",
    "EventName",
    "Events",
    "HookJob",
    "HookJobs",
    "HookState",
    "IdMatches",
    "Inbox",
    "InboxError",
    "InboxGauges",
    "InboxMessage",
    "InboxSchemaError",
    "MessageState",
    "Outbox",
    "OutboxEntry",
    "ReceiptUpload",
    "ReceiptUploads",
    "ReceivedMessages",
    "SentMessage",
    "SentMessages",
    "StoredEvent",
    "StoredReceipt",
    "UnknownMessageError",
    "migrations",
]


@dataclass(frozen=True, slots=True)
class InboxGauges:
    """How much is waiting, for the daemon's metrics (one read)."""

    unhandled: int
    """Received messages neither acknowledged nor rejected yet."""
    outbox_queued: int
    """Envelopes waiting in the outbox for the relay."""
    decisions_pending: int
    """Decision receipts not yet confirmed by the relay."""
    hook_jobs_pending: int
    hook_jobs_failed: int


@dataclass(frozen=True, slots=True)
class IdMatches:
    received: tuple[str, ...]
    sent: tuple[str, ...]


class Inbox:
    """An open inbox. Create with ``await Inbox.open(path)``; ``await close()`` when done."""

    def __init__(self, db: Database) -> None:
        # Use Inbox.open().
        self._db = db
        self.path = db.path
        self.received = ReceivedMessages(db)
        self.sent = SentMessages(db)
        self.events = Events(db)
        self.hook_jobs = HookJobs(db)
        self.outbox = Outbox(db)
        self.uploads = ReceiptUploads(db)
        self.retention = Retention(db)
        self.audit = AuditTrail(db)

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, schema: list[Migration] | None = None
    ) -> Inbox:
        """Open (creating if needed, mode 0600) and migrate the inbox database at ``path``."""
        return cls(await Database.open(path, schema=schema))

    async def close(self) -> None:
        """Wait for calls already made, then close the database. Idempotent."""
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def schema_version(self) -> int:
        return await self._db.schema_version()

    async def ids_with_prefix(self, prefix: str, *, limit: int = 10) -> IdMatches:
        """Message ids starting with ``prefix``, received and sent (an index range each)."""
        low, high = prefix, prefix + "~"  # "~" sorts after every character of an id

        def q(conn: sqlite3.Connection) -> IdMatches:
            def ids(table: str) -> tuple[str, ...]:
                rows = conn.execute(
                    f"SELECT id FROM {table} WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                    (low, high, limit),
                ).fetchall()
                return tuple(r["id"] for r in rows)

            return IdMatches(received=ids("messages"), sent=ids("sent"))

        return await self._db.run(q)

    async def gauges(self) -> InboxGauges:
        def q(conn: sqlite3.Connection) -> InboxGauges:
            row = conn.execute(
                "SELECT (SELECT COUNT(*) FROM messages WHERE state = 'new'), "
                "(SELECT COUNT(*) FROM outbox WHERE state = 'queued'), "
                "(SELECT COUNT(*) FROM receipt_uploads WHERE state = 'pending'), "
                "(SELECT COUNT(*) FROM hook_jobs WHERE state = 'pending'), "
                "(SELECT COUNT(*) FROM hook_jobs WHERE state = 'failed')"
            ).fetchone()
            return InboxGauges(*(int(v) for v in row))

        return await self._db.run(q)

    async def changes(self) -> tuple[int, ...]:
        """A marker that changes whenever something the officer console shows changes:
        a message received or decided, a decision's receipt taken, a message sent, a
        receipt or an event recorded (one query; a live page asks every second)."""

        def q(conn: sqlite3.Connection) -> tuple[int, ...]:
            row = conn.execute(
                "SELECT (SELECT MAX(rowid) FROM messages), "
                "(SELECT COUNT(*) FROM messages WHERE state = 'new'), "
                "(SELECT COUNT(*) FROM receipt_uploads WHERE state = 'pending'), "
                "(SELECT MAX(rowid) FROM sent), "
                "(SELECT MAX(rowid) FROM receipts), "
                "(SELECT MAX(rowid) FROM events)"
            ).fetchone()
            return tuple(int(v or 0) for v in row)

        return await self._db.run(q)

    @property
    def attachments_dir(self) -> Path:
        """Where downloaded attachments go: ``attachments/`` beside the database file."""
        return self.path.parent / "attachments"

    def attachment_path(self, msg_id: str, name: str) -> Path:
        """The local file for attachment ``name`` of message ``msg_id`` (it may not exist).

        ``name`` comes from the sender, so it is made safe: the path always stays inside
        ``attachments/<msg_id>/``.
        """
        if not is_uuid7(msg_id):
            raise InboxError("not a message id")
        return self.attachments_dir / msg_id / _safe_filename(name)


_SAFE_NAME = re.compile(r"[^\w.\- ]", re.UNICODE)


def _safe_filename(name: str) -> str:
    """A file name derived from an attachment name that cannot leave its folder.

    A name that is already safe is kept; otherwise unsafe characters become ``_`` and a
    short hash of the original name is added, so that two different names never map to
    the same file.
    """
    safe = _SAFE_NAME.sub("_", name).lstrip(". ")
    if len(safe.encode("utf-8")) > 150:
        safe = safe.encode("utf-8")[:150].decode("utf-8", "ignore")
    if safe == name and safe:
        return safe
    tag = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    stem, dot, ext = safe.rpartition(".")
    if dot and stem and len(ext) <= 10:
        return f"{stem}~{tag}.{ext}"
    return f"{safe or 'attachment'}~{tag}"
