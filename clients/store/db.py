"""The inbox database: one SQLite file, one connection, every call in one worker thread.

:mod:`sqlite3` blocks, so the connection lives in a single dedicated thread
(``ThreadPoolExecutor(max_workers=1)``) and :meth:`Database.run` hands work to it; calls
run in the order they were made. Errors from :mod:`sqlite3` are raised as
:class:`InboxError`.

Durability: WAL with ``synchronous=FULL``; a write returns only once its transaction is
committed. The file is created with mode 0600 (it holds decrypted content).

The schema is versioned: numbered SQL files in ``clients/store/schema`` (package data,
``0001-initial.sql``, ...) are applied in order, each in its own transaction together
with its number in the ``version`` table, so a half-applied upgrade is never left
behind. A database whose version is newer than the newest file is refused.

::

    InboxError                 base class; also a database failure or a closed inbox
    ├── InboxSchemaError       the file's schema is newer than this software
    ├── UnknownMessageError    no received message with that id
    └── AlreadyDecidedError    the message was already acknowledged or rejected
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import pydantic_core

__all__ = [
    "SCHEMA_VERSION",
    "AlreadyDecidedError",
    "Database",
    "InboxError",
    "InboxSchemaError",
    "Migration",
    "UnknownMessageError",
    "migrations",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
Migration = tuple[int, str, str]
"""(version, file name, SQL) of one schema file."""


class InboxError(Exception):
    """The inbox refused an operation, or its database failed. One plain sentence."""


class InboxSchemaError(InboxError):
    pass


class UnknownMessageError(InboxError):
    pass


class AlreadyDecidedError(InboxError):
    pass


def migrations() -> list[Migration]:
    """(version, name, sql) for every schema file shipped in ``clients.store.schema``.

    The files are read once (at import), so this does no I/O afterwards.
    """
    return list(_read_migrations())


@functools.cache
def _read_migrations() -> tuple[Migration, ...]:
    out = []
    for entry in resources.files("clients.store.schema").iterdir():
        name = entry.name
        if name.endswith(".sql"):
            out.append((int(name.split("-", 1)[0]), name, entry.read_text(encoding="utf-8")))
    out.sort()
    if [v for v, _, _ in out] != list(range(1, len(out) + 1)):
        raise InboxSchemaError("the inbox schema files are not numbered 1, 2, 3, ...")
    return tuple(out)


SCHEMA_VERSION = len(migrations())


def dumps(value: Any) -> str:
    """Compact JSON for a TEXT column (pydantic-core's serialiser: the text
    ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` writes for the JSON
    values stored here, several times faster)."""
    return pydantic_core.to_json(value).decode()


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (worker thread), taking the write lock at once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Database:
    """An open inbox database. Create with ``await Database.open(path)``."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        # Use Database.open(); the connection belongs to the executor's single thread.
        self.path = path
        self._executor = executor
        self._conn = conn
        self._closed = False

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, schema: Sequence[Migration] | None = None
    ) -> Database:
        """Open (creating if needed, mode 0600) and migrate the database at ``path``.

        ``schema`` replaces the shipped migrations (tests of the upgrade path only).
        """
        db_path = Path(path)
        scripts = None if schema is None else list(schema)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cpar-inbox")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, db_path, scripts)
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

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in the worker thread; sqlite3 errors become InboxError."""
        if self._closed:
            raise InboxError("the inbox is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _guarded, fn, self._conn)

    async def schema_version(self) -> int:
        return await self.run(schema_version)


# --- worker-thread functions --------------------------------------------------------------


def _guarded(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    try:
        return fn(conn)
    except sqlite3.Error as exc:
        raise InboxError(f"inbox database error: {exc}") from exc


def schema_version(conn: sqlite3.Connection) -> int:
    """The version recorded in the file; 0 for a new, empty database."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT MAX(version) AS v FROM version").fetchone()
    return int(row["v"] or 0)


def migrate(conn: sqlite3.Connection, scripts: Sequence[Migration]) -> int:
    """Apply the scripts newer than the file's version, in order; return the version."""
    newest = max((v for v, _, _ in scripts), default=0)
    current = schema_version(conn)
    if current > newest:
        raise InboxSchemaError(
            f"the inbox schema is version {current}, newer than this software (version {newest})"
        )
    for version, name, sql in sorted(scripts):
        if version <= current:
            continue
        # Another process (the daemon and the CLI share the inbox) may be migrating the
        # same file: take the write lock first, then look again.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) >= version:
                conn.execute("COMMIT")
                continue
            for statement in sql.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("DELETE FROM version")
            conn.execute("INSERT INTO version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.info("inbox schema upgraded to version %d (%s)", version, name)
    return max(current, newest)


def _connect(path: Path, scripts: Sequence[Migration] | None) -> sqlite3.Connection:
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
        migrate(conn, migrations() if scripts is None else scripts)
    except sqlite3.Error as exc:
        conn.close()
        raise InboxError(f"cannot open the inbox at {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn
