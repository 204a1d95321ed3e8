"""The daemon's local inbox: one SQLite file, every call in one worker thread.

What it keeps:

* **received messages**, verified and decrypted, deduplicated by message id so that
  at-least-once delivery has an exactly-once effect; each is ``new`` until a named
  person acknowledges it or it is rejected, and that decision is final;
* **sent messages** and the receipts that came back for them (deduplicated by token),
  so the sender can follow a message's timeline;
* **hook jobs**: which delivery hook still has to hand which message to a local system,
  and when to try again. They are written in the same transaction as the message, so a
  crash never loses one, and they survive restarts.

Durability: WAL with ``synchronous=FULL``; every write method returns only once its
transaction is committed. The schema is versioned: :data:`MIGRATIONS` is a list of SQL
scripts applied in order, each in its own transaction together with the new number in
the ``version`` table, so a half-applied upgrade is never left behind.

Threading: :mod:`sqlite3` blocks, so the connection lives in a single dedicated thread
(``ThreadPoolExecutor(max_workers=1)``) and the async methods hand work to it. Calls run
in the order they were made. Errors from :mod:`sqlite3` are raised as
:class:`InboxError`.

::

    InboxError                 base class; also a database failure or a closed inbox
    ├── InboxSchemaError       the file's schema is newer than this software
    ├── UnknownMessageError    no received message with that id
    └── AlreadyDecidedError    the message was already acknowledged or rejected
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from pydantic import JsonValue

from clients.kinds import InvalidNoticeError, Notice, parse_notice
from keys.encoding import is_uuid7
from keys.envelope import OpenedEnvelope, envelope_hash
from keys.models import AttachmentManifestEntry

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "AlreadyDecidedError",
    "HookJob",
    "Inbox",
    "InboxError",
    "InboxMessage",
    "InboxSchemaError",
    "MessageState",
    "SentMessage",
    "StoredReceipt",
    "UnknownMessageError",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
MessageState = Literal["new", "acknowledged", "rejected"]
HookState = Literal["pending", "done", "failed", "skipped"]
_STATES: frozenset[str] = frozenset({"new", "acknowledged", "rejected"})
MAX_PERSON = 200  # as ReceiptBody.person
MAX_REASON = 500  # as ReceiptBody.reason


class InboxError(Exception):
    """The inbox refused an operation, or its database failed. One plain sentence."""


class InboxSchemaError(InboxError):
    pass


class UnknownMessageError(InboxError):
    pass


class AlreadyDecidedError(InboxError):
    pass


MIGRATIONS: list[str] = [
    # v1
    """
    CREATE TABLE version (version INTEGER NOT NULL);

    CREATE TABLE messages (
        id              TEXT PRIMARY KEY,
        sender          TEXT NOT NULL,
        recipients      TEXT NOT NULL,          -- JSON list: the header's "to"
        role            TEXT NOT NULL CHECK (role IN ('to', 'fallback')),
        priority        TEXT NOT NULL,
        created         INTEGER NOT NULL,
        expires         INTEGER NOT NULL,
        ack_by          INTEGER,
        received_at     INTEGER NOT NULL,
        handling        TEXT NOT NULL,          -- JSON list of codes
        kind            TEXT,                   -- content.kind, as sent (may be invalid)
        content         TEXT NOT NULL,          -- JSON object
        attachments     TEXT NOT NULL,          -- JSON list: the encrypted manifest
        envelope_hash   TEXT NOT NULL,
        token           TEXT NOT NULL,          -- the compact envelope as received
        state           TEXT NOT NULL DEFAULT 'new'
                        CHECK (state IN ('new', 'acknowledged', 'rejected')),
        acknowledged_by TEXT,
        acknowledged_at INTEGER,
        rejected_reason TEXT,
        decided_at      INTEGER
    );
    CREATE INDEX messages_newest ON messages (received_at DESC, created DESC);
    CREATE INDEX messages_state ON messages (state, received_at DESC);

    CREATE TABLE sent (
        id              TEXT PRIMARY KEY,
        recipients      TEXT NOT NULL,
        envelope_hash   TEXT NOT NULL,
        created         INTEGER NOT NULL,
        priority        TEXT NOT NULL,
        summary         TEXT NOT NULL
    );
    CREATE INDEX sent_newest ON sent (created DESC);

    CREATE TABLE receipts (
        token_hash      TEXT PRIMARY KEY,       -- SHA-256 of the token: dedupe key
        msg_id          TEXT NOT NULL,
        token           TEXT NOT NULL,
        status          TEXT NOT NULL,
        signer          TEXT NOT NULL,
        at              INTEGER NOT NULL
    );
    CREATE INDEX receipts_by_message ON receipts (msg_id, at);

    CREATE TABLE hook_jobs (
        msg_id          TEXT NOT NULL REFERENCES messages (id),
        hook            TEXT NOT NULL,
        state           TEXT NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'done', 'failed', 'skipped')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        last_error      TEXT,
        skipped_reason  TEXT,
        PRIMARY KEY (msg_id, hook)
    );
    CREATE INDEX hook_jobs_due ON hook_jobs (next_attempt_at) WHERE state = 'pending';
    """,
]
"""Schema scripts; ``MIGRATIONS[n]`` upgrades version ``n`` to ``n + 1``. Append only."""

SCHEMA_VERSION = len(MIGRATIONS)


# --- records ----------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    msg_id: str
    token: str
    status: str
    signer: str
    at: int


@dataclass(frozen=True, slots=True)
class HookJob:
    msg_id: str
    hook: str
    state: HookState
    attempts: int
    """Attempts made so far (successful, failed)."""
    next_attempt_at: int | None
    last_error: str | None
    skipped_reason: str | None


# --- helpers (worker thread) ------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_MESSAGE_COLUMNS = (
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


def _hook_job(row: sqlite3.Row) -> HookJob:
    return HookJob(
        msg_id=row["msg_id"],
        hook=row["hook"],
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        skipped_reason=row["skipped_reason"],
    )


def _insert_message(
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
            _dumps(header.to),
            opened.role,
            header.prio,
            header.created,
            header.expires,
            header.ack_by,
            received_at,
            _dumps(plain.handling),
            kind[:64] if isinstance(kind, str) else None,
            _dumps(plain.content),
            _dumps([a.model_dump(mode="json") for a in plain.attachments]),
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
    conn.executemany(
        "INSERT OR IGNORE INTO hook_jobs (msg_id, hook, next_attempt_at) VALUES (?, ?, ?)",
        [(header.id, name, received_at) for name in hooks],
    )
    return True


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


# --- the inbox ----------------------------------------------------------------------------


class Inbox:
    """An open inbox. Create with ``await Inbox.open(path)``; ``await close()`` when done."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        # Use Inbox.open(); the connection belongs to the executor's single thread.
        self.path = path
        self._executor = executor
        self._conn = conn
        self._closed = False

    # lifecycle

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Inbox:
        """Open (creating if needed, mode 0600) and migrate the inbox database at ``path``."""
        db_path = Path(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cpar-inbox")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, db_path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(db_path, executor, conn)

    async def close(self) -> None:
        """Wait for calls already made, then close the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise InboxError("the inbox is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _guarded, fn, self._conn)

    async def schema_version(self) -> int:
        def q(conn: sqlite3.Connection) -> int:
            return _version(conn)

        return await self._run(q)

    # received messages

    async def store_message(
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
            with _transaction(conn):
                return _insert_message(conn, opened, token, received_at, hook_names)

        return await self._run(tx)

    async def store_many(
        self,
        items: Sequence[tuple[OpenedEnvelope, str]],
        *,
        received_at: int,
        hooks: Sequence[str] = (),
    ) -> builtins.list[bool]:
        """:meth:`store_message` for each item, all in one transaction; one result each.

        A message id repeated inside the batch is stored once (the first), and the later
        occurrences report False. If any item fails, nothing of the batch is stored.
        """
        batch = builtins.list(items)
        hook_names = builtins.list(hooks)

        def tx(conn: sqlite3.Connection) -> builtins.list[bool]:
            with _transaction(conn):
                return [
                    _insert_message(conn, opened, token, received_at, hook_names)
                    for opened, token in batch
                ]

        return await self._run(tx)

    async def get(self, msg_id: str) -> InboxMessage | None:
        def q(conn: sqlite3.Connection) -> InboxMessage | None:
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?",
                (msg_id,),
            ).fetchone()
            return None if row is None else _message(row)

        return await self._run(q)

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
                f"SELECT {_MESSAGE_COLUMNS} FROM messages {where} "
                "ORDER BY received_at DESC, created DESC, id DESC LIMIT ?",
                params,
            ).fetchall()
            return [_message(r) for r in rows]

        return await self._run(q)

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
            with _transaction(conn):
                changed = conn.execute(sql, params).rowcount
                row = conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?",
                    (msg_id,),
                ).fetchone()
            if row is None:
                raise UnknownMessageError(f"no message {msg_id} in the inbox")
            if changed == 0:
                raise AlreadyDecidedError(f"message {msg_id} was already {row['state']}")
            return _message(row)

        return await self._run(tx)

    # sent messages and their receipts

    async def record_sent(
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
        recipients = _dumps(builtins.list(to))

        def tx(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
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

        return await self._run(tx)

    async def record_receipt(
        self, msg_id: str, token: str, *, status: str, signer: str, at: int
    ) -> bool:
        """Store a (verified) receipt; True if new, False if that token is already stored.

        The message need not have been recorded with :meth:`record_sent` first: a
        receipt can overtake the sender's own bookkeeping.
        """
        token_hash = hashlib.sha256(token.encode("utf-8")).hexdigest()

        def tx(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                cur = conn.execute(
                    "INSERT INTO receipts (token_hash, msg_id, token, status, signer, at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING",
                    (token_hash, msg_id, token, status, signer, at),
                )
                return cur.rowcount == 1

        return await self._run(tx)

    async def get_sent(self, msg_id: str) -> SentMessage | None:
        """One message we sent, with its latest receipt status, or None."""
        found = await self._sent("WHERE s.id = ?", (msg_id,), 1)
        return found[0] if found else None

    async def sent(self, limit: int = 50) -> builtins.list[SentMessage]:
        """Messages we sent, newest first, each with its latest receipt status."""
        return await self._sent("", (), limit)

    async def _sent(
        self, where: str, params: tuple[Any, ...], limit: int
    ) -> builtins.list[SentMessage]:
        def q(conn: sqlite3.Connection) -> builtins.list[SentMessage]:
            rows = conn.execute(
                "SELECT s.*, r.status AS last_status, r.at AS last_status_at FROM sent s "
                "LEFT JOIN receipts r ON r.token_hash = ("
                "  SELECT token_hash FROM receipts WHERE msg_id = s.id "
                f"  ORDER BY at DESC, rowid DESC LIMIT 1) {where} "
                "ORDER BY s.created DESC, s.id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [
                SentMessage(
                    id=r["id"],
                    to=tuple(json.loads(r["recipients"])),
                    envelope_hash=r["envelope_hash"],
                    created=r["created"],
                    priority=r["priority"],
                    summary=r["summary"],
                    last_status=r["last_status"],
                    last_status_at=r["last_status_at"],
                )
                for r in rows
            ]

        return await self._run(q)

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

        return await self._run(q)

    # hook jobs

    async def schedule_hooks(self, msg_id: str, hook_names: Sequence[str], *, at: int = 0) -> int:
        """Add a pending job, due at ``at``, for each hook that has none for the message yet.

        Returns how many were added. (A new message's jobs are normally created by
        :meth:`store_message` itself, in the same transaction.)
        """
        names = builtins.list(hook_names)

        def tx(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                if (
                    conn.execute("SELECT 1 FROM messages WHERE id = ?", (msg_id,)).fetchone()
                    is None
                ):
                    raise UnknownMessageError(f"no message {msg_id} in the inbox")
                added = 0
                for name in names:
                    added += conn.execute(
                        "INSERT OR IGNORE INTO hook_jobs (msg_id, hook, next_attempt_at) "
                        "VALUES (?, ?, ?)",
                        (msg_id, name, at),
                    ).rowcount
                return added

        return await self._run(tx)

    async def hook_jobs_due(
        self, now: int, *, hooks: Collection[str] | None = None, limit: int = 500
    ) -> builtins.list[HookJob]:
        """Pending jobs whose next attempt is due at ``now``, oldest due first.

        With ``hooks``, only jobs for those hook names (jobs of a hook that is no longer
        configured stay pending until it is configured again).
        """
        names = None if hooks is None else sorted(hooks)

        def q(conn: sqlite3.Connection) -> builtins.list[HookJob]:
            sql = "SELECT * FROM hook_jobs WHERE state = 'pending' AND next_attempt_at <= ?"
            params: builtins.list[Any] = [now]
            if names is not None:
                if not names:
                    return []
                sql += f" AND hook IN ({', '.join('?' * len(names))})"
                params += names
            sql += " ORDER BY next_attempt_at, msg_id, hook LIMIT ?"
            params.append(limit)
            return [_hook_job(r) for r in conn.execute(sql, params).fetchall()]

        return await self._run(q)

    async def hook_jobs(self, msg_id: str) -> builtins.list[HookJob]:
        """Every hook job of one message, whatever its state, by hook name."""

        def q(conn: sqlite3.Connection) -> builtins.list[HookJob]:
            rows = conn.execute(
                "SELECT * FROM hook_jobs WHERE msg_id = ? ORDER BY hook", (msg_id,)
            ).fetchall()
            return [_hook_job(r) for r in rows]

        return await self._run(q)

    async def finish_hook(
        self,
        msg_id: str,
        hook: str,
        *,
        ok: bool,
        error: str | None,
        next_attempt_at: int | None,
        skipped: str | None = None,
    ) -> HookJob:
        """Record the outcome of one attempt of a pending job; returns the updated job.

        * ``skipped``: the job will never run (the reason is kept); not counted as an attempt;
        * ``ok``: done;
        * failed with ``next_attempt_at``: stays pending, due then;
        * failed without: given up (``failed``).
        """
        if skipped is not None:
            sql = (
                "UPDATE hook_jobs SET state = 'skipped', skipped_reason = ?, "
                "next_attempt_at = NULL WHERE msg_id = ? AND hook = ? AND state = 'pending'"
            )
            params: tuple[Any, ...] = (skipped, msg_id, hook)
        else:
            if ok:
                state, due, err = "done", None, None
            elif next_attempt_at is not None:
                state, due, err = "pending", next_attempt_at, error
            else:
                state, due, err = "failed", None, error
            sql = (
                "UPDATE hook_jobs SET state = ?, attempts = attempts + 1, next_attempt_at = ?, "
                "last_error = ? WHERE msg_id = ? AND hook = ? AND state = 'pending'"
            )
            params = (state, due, err, msg_id, hook)

        def tx(conn: sqlite3.Connection) -> HookJob:
            with _transaction(conn):
                changed = conn.execute(sql, params).rowcount
                row = conn.execute(
                    "SELECT * FROM hook_jobs WHERE msg_id = ? AND hook = ?", (msg_id, hook)
                ).fetchone()
            if row is None:
                raise InboxError(f"no job for hook {hook} on message {msg_id}")
            if changed == 0:
                raise InboxError(f"the job for hook {hook} on message {msg_id} is not pending")
            return _hook_job(row)

        return await self._run(tx)

    # attachments

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


# --- worker-thread functions --------------------------------------------------------------


def _guarded(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    try:
        return fn(conn)
    except sqlite3.Error as exc:
        raise InboxError(f"inbox database error: {exc}") from exc


def _version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT MAX(version) AS v FROM version").fetchone()
    return int(row["v"] or 0)


def _migrate(conn: sqlite3.Connection) -> None:
    current = _version(conn)
    if current > SCHEMA_VERSION:
        raise InboxSchemaError(
            f"the inbox schema is version {current}, newer than this software "
            f"(version {SCHEMA_VERSION})"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        script = MIGRATIONS[version - 1]
        # Another process (the daemon and the CLI share the inbox) may be migrating the
        # same file: take the write lock first, then look again.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if _version(conn) >= version:
                conn.execute("COMMIT")
                continue
            for statement in script.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("DELETE FROM version")
            conn.execute("INSERT INTO version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.info("inbox schema upgraded to version %d", version)


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Decrypted content lives here: create the file private (WAL/SHM files follow).
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    except OSError as exc:
        raise InboxError(f"cannot create the inbox at {path}: {exc.strerror}") from exc
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    except sqlite3.Error as exc:
        raise InboxError(f"cannot open the inbox at {path}: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise InboxError(f"the inbox at {path} cannot use WAL (journal mode {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 5000")
        _migrate(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise InboxError(f"cannot open the inbox at {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn
