"""Received messages: verified and decrypted, deduplicated by message id.

At-least-once delivery has an exactly-once effect here: a message id is stored once. Each
message is ``new`` until a named person acknowledges it or it is rejected, and that
decision is final. A new message's hook jobs are written in the same transaction
(:func:`clients.store.hookjobs.add_jobs`), so a crash never loses one.
"""

from __future__ import annotations

import builtins
import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import JsonValue

from clients.kinds import InvalidNoticeError, Notice, parse_notice
from clients.store.db import (
    AlreadyDecidedError,
    Database,
    InboxError,
    UnknownMessageError,
    dumps,
    transaction,
)
from clients.store.hookjobs import add_jobs
from keys.envelope import OpenedEnvelope, envelope_hash
from keys.models import AttachmentManifestEntry

__all__ = ["MAX_PERSON", "MAX_REASON", "InboxMessage", "MessageState", "ReceivedMessages"]

log = logging.getLogger(__name__)

MessageState = Literal["new", "acknowledged", "rejected"]
_STATES: frozenset[str] = frozenset({"new", "acknowledged", "rejected"})
MAX_PERSON = 200  # as ReceiptBody.person
MAX_REASON = 500  # as ReceiptBody.reason


@dataclass(frozen=True, slots=True)
class InboxMessage:
    """A received message as stored. ``content`` is the decrypted JSON object."""

    id: str
    sender: str
    to: tuple[str, ...]
    role: Literal["to", "fallback"]
    priority: str
    created: int
    expires: int
    ack_by: int | None
    received_at: int
    handling: tuple[str, ...]
    kind: str | None
    content: dict[str, JsonValue]
    attachments: tuple[AttachmentManifestEntry, ...]
    envelope_hash: str
    token: str
    state: MessageState
    acknowledged_by: str | None
    acknowledged_at: int | None
    rejected_reason: str | None
    decided_at: int | None

    @property
    def notice(self) -> Notice | None:
        """The content as a typed notice, or None if it is not a valid one."""
        try:
            return parse_notice(self.content)
        except InvalidNoticeError:
            return None


_COLUMNS = (
    "id, sender, recipients, role, priority, created, expires, ack_by, received_at, "
    "handling, kind, content, attachments, envelope_hash, token, state, acknowledged_by, "
    "acknowledged_at, rejected_reason, decided_at"
)


def _message(row: sqlite3.Row) -> InboxMessage:
    return InboxMessage(
        id=row["id"],
        sender=row["sender"],
        to=tuple(json.loads(row["recipients"])),
        role=row["role"],
        priority=row["priority"],
        created=row["created"],
        expires=row["expires"],
        ack_by=row["ack_by"],
        received_at=row["received_at"],
        handling=tuple(json.loads(row["handling"])),
        kind=row["kind"],
        content=json.loads(row["content"]),
        attachments=tuple(
            AttachmentManifestEntry.model_validate(a) for a in json.loads(row["attachments"])
        ),
        envelope_hash=row["envelope_hash"],
        token=row["token"],
        state=row["state"],
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=row["acknowledged_at"],
        rejected_reason=row["rejected_reason"],
        decided_at=row["decided_at"],
    )


def _insert(
    conn: sqlite3.Connection,
    opened: OpenedEnvelope,
    token: str,
    received_at: int,
    hooks: Sequence[str],
) -> bool:
    header, plain = opened.header, opened.plaintext
    if envelope_hash(token) != opened.hash:
        raise InboxError(f"message {header.id}: the token is not the envelope that was opened")
    kind = plain.content.get("kind")
    cur = conn.execute(
        "INSERT INTO messages (id, sender, recipients, role, priority, created, expires, "
        "ack_by, received_at, handling, kind, content, attachments, envelope_hash, token) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (
            header.id,
            header.from_,
            dumps(header.to),
            opened.role,
            header.prio,
            header.created,
            header.expires,
            header.ack_by,
            received_at,
            dumps(plain.handling),
            kind[:64] if isinstance(kind, str) else None,
            dumps(plain.content),
            dumps([a.model_dump(mode="json") for a in plain.attachments]),
            opened.hash,
            token,
        ),
    )
    if cur.rowcount == 0:
        stored = conn.execute(
            "SELECT envelope_hash FROM messages WHERE id = ?", (header.id,)
        ).fetchone()
        if stored is not None and stored["envelope_hash"] != opened.hash:
            log.warning(
                "message %s arrived again as a different envelope; the first one is kept",
                header.id,
            )
        return False
    add_jobs(conn, header.id, hooks, received_at)
    return True


class ReceivedMessages:
    """The received messages of one inbox (``inbox.received``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def store(
        self,
        opened: OpenedEnvelope,
        token: str,
        *,
        received_at: int,
        hooks: Sequence[str] = (),
    ) -> bool:
        """Store a verified, decrypted message; True if new, False if its id is already stored.

        When new, a pending job for each of ``hooks`` is created in the same transaction.
        The write is committed before this returns.
        """
        hook_names = builtins.list(hooks)

        def tx(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                return _insert(conn, opened, token, received_at, hook_names)

        return await self._db.run(tx)

    async def store_many(
        self,
        items: Sequence[tuple[OpenedEnvelope, str]],
        *,
        received_at: int,
        hooks: Sequence[str] = (),
    ) -> builtins.list[bool]:
        """:meth:`store` for each item, all in one transaction; one result each.

        A message id repeated inside the batch is stored once (the first), and the later
        occurrences report False. If any item fails, nothing of the batch is stored.
        """
        batch = builtins.list(items)
        hook_names = builtins.list(hooks)

        def tx(conn: sqlite3.Connection) -> builtins.list[bool]:
            with transaction(conn):
                return [
                    _insert(conn, opened, token, received_at, hook_names) for opened, token in batch
                ]

        return await self._db.run(tx)

    async def get(self, msg_id: str) -> InboxMessage | None:
        def q(conn: sqlite3.Connection) -> InboxMessage | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE id = ?", (msg_id,)
            ).fetchone()
            return None if row is None else _message(row)

        return await self._db.run(q)

    async def list(
        self, *, limit: int = 50, state: MessageState | None = None
    ) -> builtins.list[InboxMessage]:
        """Received messages, newest first (by time received, then created)."""
        if state is not None and state not in _STATES:
            raise InboxError(f"unknown message state {state!r}")
        if limit < 0:
            raise InboxError("limit must not be negative")

        def q(conn: sqlite3.Connection) -> builtins.list[InboxMessage]:
            where = "" if state is None else "WHERE state = ?"
            params: tuple[Any, ...] = (limit,) if state is None else (state, limit)
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM messages {where} "
                "ORDER BY received_at DESC, created DESC, id DESC LIMIT ?",
                params,
            ).fetchall()
            return [_message(r) for r in rows]

        return await self._db.run(q)

    async def mark_acknowledged(self, msg_id: str, *, person: str, at: int) -> InboxMessage:
        """Record that ``person`` has taken the message in hand. Final; returns the message."""
        if not 1 <= len(person) <= MAX_PERSON:
            raise InboxError(f"the person's name must be 1 to {MAX_PERSON} characters")
        return await self._decide(
            msg_id,
            "UPDATE messages SET state = 'acknowledged', acknowledged_by = ?, "
            "acknowledged_at = ?, decided_at = ? WHERE id = ? AND state = 'new'",
            (person, at, at, msg_id),
        )

    async def mark_rejected(self, msg_id: str, *, reason: str, at: int) -> InboxMessage:
        """Record that the message is rejected, and why. Final; returns the message."""
        if not 1 <= len(reason) <= MAX_REASON:
            raise InboxError(f"the reason must be 1 to {MAX_REASON} characters")
        return await self._decide(
            msg_id,
            "UPDATE messages SET state = 'rejected', rejected_reason = ?, decided_at = ? "
            "WHERE id = ? AND state = 'new'",
            (reason, at, msg_id),
        )

    async def _decide(self, msg_id: str, sql: str, params: tuple[Any, ...]) -> InboxMessage:
        def tx(conn: sqlite3.Connection) -> InboxMessage:
            with transaction(conn):
                changed = conn.execute(sql, params).rowcount
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM messages WHERE id = ?", (msg_id,)
                ).fetchone()
            if row is None:
                raise UnknownMessageError(f"no message {msg_id} in the inbox")
            if changed == 0:
                raise AlreadyDecidedError(f"message {msg_id} was already {row['state']}")
            return _message(row)

        return await self._db.run(tx)
