"""The embedded store: one SQLite file, WAL, ``synchronous=FULL``, group commit.

All SQLite work runs in two dedicated threads, never on the event loop: one writer
connection and one reader connection (WAL lets reads proceed during a write). Writes
are *group-committed*: every write request queued while the previous transaction was
being committed goes into the next transaction, each in its own savepoint, so one
``fsync`` covers many messages under load and a failing request cannot spoil the
others. A write's coroutine returns only after its transaction has committed.

Schema changes are numbered SQL files in ``relay/store/schema`` applied in order; the
``schema_version`` table records how far a database has been migrated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import pydantic_core

from keys.lifecycle import Transition, transition
from keys.merkle import Frontier
from relay.store.base import (
    TERMINAL_STATES,
    AcceptResult,
    Escalation,
    LogHead,
    MessageRecord,
    NewMessage,
    Pruned,
    QueueItem,
    QueueStats,
    ReceiptRecord,
    StoreUnavailableError,
    Timer,
    log_leaf,
)
from relay.store.nonces import NonceJournal

log = logging.getLogger(__name__)
T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], Any]


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every schema file, in order."""
    out = []
    for entry in resources.files("relay.store.schema").iterdir():
        name = entry.name
        if name.endswith(".sql"):
            out.append((int(name.split("-", 1)[0]), name, entry.read_text(encoding="utf-8")))
    return sorted(out)


SCHEMA_VERSION = max(v for v, _, _ in migrations())


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _migrate(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    current = row[0] or 0
    for version, name, sql in migrations():
        if version <= current:
            continue
        log.info("applying relay schema migration %s", name)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in sql.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        current = version
    return int(current)


def _record(row: sqlite3.Row | tuple[Any, ...]) -> MessageRecord:
    return MessageRecord(
        id=row[0],
        sender=row[1],
        to=tuple(json.loads(row[2])),
        fallbacks=tuple(json.loads(row[3])),
        envelope=row[4],
        env_hash=row[5],
        created=row[6],
        expires=row[7],
        priority=row[8],
        ack_by=row[9],
        accepted_at=row[10],
        accepted_receipt=row[11],
        state=row[12],
        attachments=tuple(json.loads(row[13])),
        policy=row[14],
        generation=row[15],
        escalation_step=row[16],
        released=tuple(json.loads(row[17])),
        log_index=row[18],
    )


_MESSAGE_COLUMNS = (
    "id, sender, recipients, fallbacks, envelope, env_hash, created, expires, priority, "
    "ack_by, accepted_at, accepted_receipt, state, attachments, policy, generation, "
    "escalation_step, released, log_index"
)
_INSERT_COLUMNS = (
    "id, sender, recipients, fallbacks, envelope, env_hash, created, expires, priority, "
    "ack_by, accepted_at, accepted_receipt, state, attachments, policy, log_index"
)


class _Log:
    """The log's frontier, owned by the writer thread. Each op appends its receipts'
    leaves in its transaction; a rolled-back op or batch puts the frontier back, and a
    committed batch publishes the new head for readers (an attribute swap)."""

    def __init__(self) -> None:
        self.frontier = Frontier()
        self.head = LogHead(0, self.frontier.root())

    def load(self, conn: sqlite3.Connection) -> None:
        (size,) = conn.execute("SELECT COUNT(*) FROM log_nodes WHERE level = 0").fetchone()

        def perfect(level: int, index: int) -> bytes:
            row = conn.execute(
                "SELECT hash FROM log_nodes WHERE level = ? AND idx = ?", (level, index)
            ).fetchone()
            return bytes(row[0])

        self.frontier = Frontier.load(int(size), perfect)
        self.publish()

    def append(self, conn: sqlite3.Connection, token: str) -> int:
        index = self.frontier.size
        conn.executemany(
            "INSERT INTO log_nodes (level, idx, hash) VALUES (?, ?, ?)",
            self.frontier.append(log_leaf(token)),
        )
        return index

    def mark(self) -> Frontier:
        return Frontier(self.frontier.size, list(self.frontier.nodes))

    def reset(self, mark: Frontier) -> None:
        self.frontier = mark

    def publish(self) -> None:
        self.head = LogHead(self.frontier.size, self.frontier.root())


def _ids(values: Sequence[str]) -> str:
    """A JSON array of identifiers, by pydantic-core's serialiser (several per message)."""
    return pydantic_core.to_json(values).decode()


def _close(conn: sqlite3.Connection, msg_id: str) -> None:
    """Stop escalation: bump the fencing generation and drop the timers, in the same
    transaction, so a timer firing concurrently finds nothing to do."""
    conn.execute("UPDATE messages SET generation = generation + 1 WHERE id = ?", (msg_id,))
    conn.execute("DELETE FROM timers WHERE msg_id = ?", (msg_id,))


def _add_receipt(
    conn: sqlite3.Connection, log: _Log, r: ReceiptRecord, notify: str, rule: Transition | None
) -> int | None:
    cur = conn.execute(
        "INSERT OR IGNORE INTO receipts (msg_id, status, signer, at, token, received_at, step, "
        "log_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (r.msg_id, r.status, r.signer, r.at, r.token, r.received_at, r.step, log.frontier.size),
    )
    if cur.rowcount == 0:
        return None
    log.append(conn, r.token)
    seq = conn.execute(
        "INSERT INTO queue (recipient, type, msg_id, payload, enqueued_at) "
        "VALUES (?, 'receipt', ?, ?, ?)",
        (notify, r.msg_id, r.token, r.received_at),
    ).lastrowid
    if rule is not None:
        marks = ",".join("?" * len(rule.before))
        changed = conn.execute(
            f"UPDATE messages SET state = ? WHERE id = ? AND state IN ({marks})",
            (rule.after, r.msg_id, *sorted(rule.before)),
        ).rowcount
        if changed and rule.closes:
            _close(conn, r.msg_id)
    return seq


def _fire(conn: sqlite3.Connection, log: _Log, e: Escalation) -> tuple[int, ...] | None:
    t = e.timer
    row = conn.execute(
        "SELECT m.state, m.generation FROM timers t JOIN messages m ON m.id = t.msg_id "
        "WHERE t.msg_id = ? AND t.step = ? AND t.due = ? AND t.generation = ?",
        (t.msg_id, t.step, t.due, t.generation),
    ).fetchone()
    if row is None or row[1] != t.generation or row[0] in TERMINAL_STATES:
        return None  # already fired, fenced off by an acknowledgement, or closed
    conn.execute("DELETE FROM timers WHERE msg_id = ? AND step = ?", (t.msg_id, t.step))
    seqs: list[int] = []
    for item in e.items:
        seqs.append(
            conn.execute(
                "INSERT INTO queue (recipient, type, msg_id, payload, reminder, note, enqueued_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    item.recipient,
                    item.type,
                    t.msg_id,
                    item.payload,
                    int(item.reminder),
                    item.note,
                    t.due,
                ),
            ).lastrowid
            or 0
        )
    if e.receipt is not None:
        seq = _add_receipt(conn, log, e.receipt, e.sender, None)
        if seq is not None:
            seqs.append(seq)
    if e.drop_queued:
        conn.execute(
            "DELETE FROM queue WHERE msg_id = ? AND type = 'envelope' AND payload IS NULL",
            (t.msg_id,),
        )
    if e.new_state is not None:
        conn.execute("UPDATE messages SET state = ? WHERE id = ?", (e.new_state, t.msg_id))
    if e.close:
        _close(conn, t.msg_id)
    if e.record_step:
        conn.execute(
            "UPDATE messages SET escalation_step = MAX(escalation_step, ?) WHERE id = ?",
            (t.step, t.msg_id),
        )
    if e.released:
        released = json.loads(
            conn.execute("SELECT released FROM messages WHERE id = ?", (t.msg_id,)).fetchone()[0]
        )
        merged = sorted({*released, *e.released})
        conn.execute(
            "UPDATE messages SET released = ? WHERE id = ?", (json.dumps(merged), t.msg_id)
        )
    if e.next_timer is not None and not e.close:
        step, due = e.next_timer
        conn.execute(
            "INSERT OR REPLACE INTO timers (msg_id, step, due, generation) VALUES (?, ?, ?, ?)",
            (t.msg_id, step, due, t.generation),
        )
    return tuple(seqs)


def _prune(conn: sqlite3.Connection, before: int, limit: int) -> Pruned:
    closed = sorted(TERMINAL_STATES)
    marks = ",".join("?" * len(closed))
    ids = [
        row[0]
        for row in conn.execute(
            f"SELECT id FROM messages WHERE accepted_at < ? AND state IN ({marks}) "
            "ORDER BY accepted_at LIMIT ?",
            (before, *closed, max(0, limit)),
        )
    ]
    receipts = queued = 0
    if ids:
        doomed = json.dumps(ids)
        where = "msg_id IN (SELECT value FROM json_each(?))"
        receipts = conn.execute(f"DELETE FROM receipts WHERE {where}", (doomed,)).rowcount
        # Queued copies of the envelope go with it; queued receipts and notes carry their
        # own payload and stay owed to their authority.
        queued = conn.execute(
            f"DELETE FROM queue WHERE {where} AND payload IS NULL", (doomed,)
        ).rowcount
        conn.execute(f"DELETE FROM timers WHERE {where}", (doomed,))
        conn.execute(f"DELETE FROM message_attachments WHERE {where}", (doomed,))
        conn.execute("DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?))", (doomed,))
    gone = tuple(
        row[0]
        for row in conn.execute(
            "SELECT digest FROM attachments a WHERE stored_at < ? AND NOT EXISTS "
            "(SELECT 1 FROM message_attachments x WHERE x.digest = a.digest) "
            "ORDER BY stored_at LIMIT ?",
            (before, max(0, limit)),
        ).fetchall()
    )
    conn.executemany("DELETE FROM attachments WHERE digest = ?", [(d,) for d in gone])
    return Pruned(len(ids), receipts, queued, gone)


class SQLiteStore:
    """:class:`relay.store.base.Store` on one SQLite file."""

    shared = False
    """One relay process owns the file; pushes and nonces stay in that process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-read")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._queue: list[tuple[WriteOp, asyncio.Future[Any]]] = []
        self._lazy: set[int] = set()
        """ids of queued ops that need no fsync of their own (acks): see _write."""
        self._synchronous = "FULL"
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.commits = 0
        """Transactions committed (for benchmarks: writes per commit shows batching)."""
        self._log = _Log()
        self.nonces = NonceJournal(self.path.with_name(f"{self.path.stem}-nonces.sqlite3"))
        """Request nonces, kept across restarts in their own file (relay/store/nonces.py)."""

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def open_writer() -> int:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._wconn = _connect(self.path)
            version = _migrate(self._wconn)
            self._log.load(self._wconn)
            return version

        version = await loop.run_in_executor(self._writer, open_writer)

        def open_reader() -> None:
            self._rconn = _connect(self.path)

        await loop.run_in_executor(self._reader, open_reader)
        await self.nonces.start()
        log.info("sqlite store at %s, schema version %d", self.path, version)

    async def close(self) -> None:
        if self._closed:  # closing twice is harmless (an outage test closes it early)
            return
        self._closed = True
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        loop = asyncio.get_running_loop()
        if self._wconn is not None:
            await loop.run_in_executor(self._writer, self._wconn.close)
        if self._rconn is not None:
            await loop.run_in_executor(self._reader, self._rconn.close)
        await self.nonces.close()
        # The connections were closed inside the threads; the threads are idle, so there
        # is nothing to wait for (and joining would block the loop).
        self._writer.shutdown(wait=False)
        self._reader.shutdown(wait=False)

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())  # raises StoreUnavailable

    # -- plumbing -------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed or self._rconn is None:
            raise StoreUnavailableError(
                "store is closed" if self._closed else "store is not started"
            )
        conn = self._rconn
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reader, fn, conn)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite: {exc}") from exc

    async def _write(self, op: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Queue ``op`` for the next group commit; returns once it is committed.

        ``durable=False`` (queue acknowledgements) lets a batch made only of such ops
        commit without an fsync (``synchronous=NORMAL``): losing it to an OS crash only
        brings a redelivery, which daemons deduplicate. WAL keeps commits in order, so
        the next durable commit's fsync makes it durable too."""
        if self._closed or self._wconn is None:
            raise StoreUnavailableError("store is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if not durable:
            self._lazy.add(id(fut))
        self._queue.append((op, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="sqlite-group-commit")
        return await fut

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            ids = {id(fut) for _, fut in batch}
            lazy = ids <= self._lazy
            self._lazy -= ids
            try:
                results = await loop.run_in_executor(self._writer, self._apply, batch, lazy)
            except BaseException as exc:  # the thread itself failed; fail every waiter
                log.exception("sqlite write batch failed")
                results = [(False, StoreUnavailableError(f"sqlite: {exc}"))] * len(batch)
            for (_, fut), (ok, value) in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    def _apply(
        self, batch: list[tuple[WriteOp, asyncio.Future[Any]]], lazy: bool = False
    ) -> list[tuple[bool, Any]]:
        conn = self._wconn
        assert conn is not None
        results: list[tuple[bool, Any]] = []
        before = self._log.mark()
        wanted = "NORMAL" if lazy else "FULL"
        try:
            if wanted != self._synchronous:
                conn.execute(f"PRAGMA synchronous={wanted}")
                self._synchronous = wanted
            conn.execute("BEGIN IMMEDIATE")
            for op, _ in batch:
                conn.execute("SAVEPOINT op")
                mark = self._log.mark()
                try:
                    value = op(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    self._log.reset(mark)
                    if isinstance(exc, sqlite3.OperationalError):  # I/O, busy, locked
                        exc = StoreUnavailableError(f"sqlite: {exc}")
                    results.append((False, exc))
                else:
                    conn.execute("RELEASE op")
                    results.append((True, value))
            conn.execute("COMMIT")
            self.commits += 1
            self._log.publish()
        except sqlite3.Error as exc:
            self._log.reset(before)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.error("sqlite commit failed: %s", exc)
            return [(False, StoreUnavailableError(f"sqlite: {exc}"))] * len(batch)
        return results

    # -- messages -------------------------------------------------------------------

    async def accept(self, messages: Sequence[NewMessage]) -> list[AcceptResult]:
        msgs = list(messages)

        def op(conn: sqlite3.Connection) -> list[AcceptResult]:
            out: list[AcceptResult] = []
            for m in msgs:
                # Insert first (one statement, not a lookup and an insert); only an id
                # already held makes it do nothing, and is then looked at.
                log_index = self._log.frontier.size
                fresh = conn.execute(
                    f"INSERT INTO messages ({_INSERT_COLUMNS}) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING",
                    (
                        m.id,
                        m.sender,
                        _ids(m.to),
                        _ids(m.fallbacks),
                        m.envelope,
                        m.env_hash,
                        m.created,
                        m.expires,
                        m.priority,
                        m.ack_by,
                        m.accepted_at,
                        m.accepted_receipt,
                        "accepted",
                        _ids(m.attachments),
                        m.policy,
                        log_index,
                    ),
                ).rowcount
                if not fresh:
                    row = conn.execute(
                        "SELECT env_hash, accepted_receipt FROM messages WHERE id = ?", (m.id,)
                    ).fetchone()
                    same = row[0] == m.env_hash
                    out.append(
                        AcceptResult(
                            m.id, "duplicate" if same else "conflict", row[1] if same else None
                        )
                    )
                    continue
                appended = self._log.append(conn, m.accepted_receipt)
                assert appended == log_index  # one writer thread: nothing came between
                if m.timers:
                    conn.executemany(
                        "INSERT INTO timers (msg_id, step, due, generation) VALUES (?, ?, ?, 0)",
                        [(m.id, step, due) for step, due in m.timers],
                    )
                seqs = tuple(
                    conn.execute(
                        "INSERT INTO queue (recipient, type, msg_id, payload, enqueued_at) "
                        "VALUES (?, 'envelope', ?, NULL, ?)",
                        (r, m.id, m.accepted_at),
                    ).lastrowid
                    or 0
                    for r in m.to
                )
                if m.attachments:
                    conn.executemany(
                        "INSERT OR IGNORE INTO message_attachments (digest, msg_id) VALUES (?, ?)",
                        [(d, m.id) for d in m.attachments],
                    )
                out.append(AcceptResult(m.id, "accepted", m.accepted_receipt, seqs))
            return out

        return await self._write(op)

    async def get_message(self, msg_id: str) -> MessageRecord | None:
        def q(conn: sqlite3.Connection) -> MessageRecord | None:
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (msg_id,)
            ).fetchone()
            return _record(row) if row else None

        return await self._read(q)

    async def add_receipt(self, receipt: ReceiptRecord, *, notify: str) -> bool:
        (seq,) = await self.add_receipts([(receipt, notify)])
        return seq is not None

    async def add_receipts(self, receipts: Sequence[tuple[ReceiptRecord, str]]) -> list[int | None]:
        batch = list(receipts)

        def op(conn: sqlite3.Connection) -> list[int | None]:
            return [
                _add_receipt(conn, self._log, r, notify, transition(r.status))
                for r, notify in batch
            ]

        return await self._write(op)

    async def receipts(self, msg_id: str) -> list[ReceiptRecord]:
        def q(conn: sqlite3.Connection) -> list[ReceiptRecord]:
            rows = conn.execute(
                "SELECT msg_id, status, signer, at, token, received_at, step, log_index FROM receipts "
                "WHERE msg_id = ? ORDER BY id",
                (msg_id,),
            ).fetchall()
            return [ReceiptRecord(*row) for row in rows]

        return await self._read(q)

    # -- queues ---------------------------------------------------------------------

    async def pending(self, recipient: str, *, after: int, limit: int) -> list[QueueItem]:
        def q(conn: sqlite3.Connection) -> list[QueueItem]:
            rows = conn.execute(
                "SELECT q.seq, q.recipient, q.type, q.msg_id, COALESCE(q.payload, m.envelope), "
                "q.enqueued_at, q.reminder, q.note FROM queue q "
                "LEFT JOIN messages m ON q.payload IS NULL AND m.id = q.msg_id "
                "WHERE q.recipient = ? AND q.seq > ? ORDER BY q.seq LIMIT ?",
                (recipient, after, max(0, limit)),
            ).fetchall()
            return [QueueItem(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7]) for r in rows]

        return await self._read(q)

    async def ack(self, recipient: str, seqs: Sequence[int]) -> int:
        wanted = [int(s) for s in seqs]
        if not wanted:
            return 0

        def op(conn: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(wanted))
            cur = conn.execute(
                f"DELETE FROM queue WHERE recipient = ? AND seq IN ({marks})", (recipient, *wanted)
            )
            return cur.rowcount

        return await self._write(op, durable=False)

    async def depth(self, recipient: str) -> int:
        def q(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT COUNT(*) FROM queue WHERE recipient = ?", (recipient,))
            return int(row.fetchone()[0])

        return await self._read(q)

    async def queue_stats(self) -> list[QueueStats]:
        def q(conn: sqlite3.Connection) -> list[QueueStats]:
            rows = conn.execute(
                "SELECT recipient, COUNT(*), MIN(enqueued_at) FROM queue GROUP BY recipient"
            ).fetchall()
            return [QueueStats(r[0], r[1], r[2]) for r in rows]

        return await self._read(q)

    # -- escalation timers ------------------------------------------------------------

    async def due_timers(self, now: int, *, limit: int) -> list[tuple[Timer, MessageRecord]]:
        cols = ", ".join(f"m.{c.strip()}" for c in _MESSAGE_COLUMNS.split(","))

        def q(conn: sqlite3.Connection) -> list[tuple[Timer, MessageRecord]]:
            rows = conn.execute(
                f"SELECT t.msg_id, t.step, t.due, t.generation, {cols} FROM timers t "
                "JOIN messages m ON m.id = t.msg_id WHERE t.due <= ? ORDER BY t.due LIMIT ?",
                (now, max(0, limit)),
            ).fetchall()
            return [(Timer(r[0], r[1], r[2], r[3]), _record(r[4:])) for r in rows]

        return await self._read(q)

    async def fire(self, escalations: Sequence[Escalation]) -> list[tuple[int, ...] | None]:
        batch = list(escalations)

        def op(conn: sqlite3.Connection) -> list[tuple[int, ...] | None]:
            return [_fire(conn, self._log, e) for e in batch]

        return await self._write(op)

    async def timer_stats(self, now: int, *, overdue_after_ms: int) -> tuple[int, int, int | None]:
        def q(conn: sqlite3.Connection) -> tuple[int, int, int | None]:
            total, nxt = conn.execute("SELECT COUNT(*), MIN(due) FROM timers").fetchone()
            overdue = conn.execute(
                "SELECT COUNT(*) FROM timers WHERE due < ?", (now - overdue_after_ms,)
            ).fetchone()[0]
            return int(total), int(overdue), nxt

        return await self._read(q)

    async def open_escalations(self, *, limit: int) -> list[MessageRecord]:
        def q(conn: sqlite3.Connection) -> list[MessageRecord]:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE escalation_step > 0 "
                "AND state IN ('accepted', 'delivered') ORDER BY accepted_at DESC LIMIT ?",
                (max(0, limit),),
            ).fetchall()
            return [_record(r) for r in rows]

        return await self._read(q)

    # -- coordination between instances (none: one process owns the file) -----------

    async def listen(self, deliver: Callable[[list[QueueItem]], None]) -> None:
        return None

    async def claim_nonce(self, nonce: str, expires_at: int) -> bool:
        return await self.nonces.claim(nonce, expires_at)

    # -- attachments ----------------------------------------------------------------

    async def put_attachment(self, digest: str, *, uploader: str, size: int, at: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO attachments (digest, uploader, size, stored_at) VALUES (?,?,?,?)",
                (digest, uploader, size, at),
            )
            return cur.rowcount == 1

        return await self._write(op)

    async def attachment_uploader(self, digest: str) -> str | None:
        def q(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT uploader FROM attachments WHERE digest = ?", (digest,))
            found = row.fetchone()
            return None if found is None else str(found[0])

        return await self._read(q)

    async def may_read_attachment(self, digest: str, authority: str) -> bool:
        def q(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT uploader FROM attachments WHERE digest = ?", (digest,)
            ).fetchone()
            if row is None:
                return False
            if row[0] == authority:
                return True
            rows = conn.execute(
                "SELECT m.recipients, m.fallbacks FROM message_attachments a "
                "JOIN messages m ON m.id = a.msg_id WHERE a.digest = ?",
                (digest,),
            ).fetchall()
            return any(authority in json.loads(r[0]) + json.loads(r[1]) for r in rows)

        return await self._read(q)

    # -- the log --------------------------------------------------------------------

    async def log_head(self) -> LogHead:
        if self._closed or self._wconn is None:
            raise StoreUnavailableError("store is closed")
        return self._log.head  # published by the writer after each commit

    async def log_nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        wanted = [list(k) for k in keys]

        def q(conn: sqlite3.Connection) -> dict[tuple[int, int], bytes]:
            rows = conn.execute(
                "SELECT n.level, n.idx, n.hash FROM log_nodes n JOIN json_each(?) k "
                "ON n.level = json_extract(k.value, '$[0]') AND n.idx = json_extract(k.value, '$[1]')",
                (json.dumps(wanted),),
            ).fetchall()
            return {(r[0], r[1]): bytes(r[2]) for r in rows}

        return await self._read(q) if wanted else {}

    # -- retention ------------------------------------------------------------------

    async def prune(self, before: int, *, limit: int) -> Pruned:
        return await self._write(lambda conn: _prune(conn, before, limit))
