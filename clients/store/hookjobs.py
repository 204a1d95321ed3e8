"""Events and hook jobs: what a person or a local system must be told, and which
delivery hook still has to hand which event to which local system.

An **event** is one of :data:`EVENTS` about one message id: ``received`` (a message
stored in the inbox), ``reminded`` (the relay pushed it again: not acknowledged in
time), ``released`` (it was released to us as a fallback), ``escalation`` (a relay-
signed notice to us as deputy, duty desk or supervisor about another authority's
message), ``expired`` (a queued envelope expired before it was submitted), ``sent`` (the
relay accepted our message) and ``acknowledged`` (a recipient acknowledged our
message). ``occurrence`` tells repeated events of one kind apart (a reminder's queue
seq), so an item the relay pushes again is the same event. Events other than
``received`` are rows of :class:`Events`, with metadata only (never content).

A **job** is ``pending`` (due at ``next_attempt_at``) until it is ``done``, given up
(``failed``) or ``skipped`` (it will never run, e.g. a handling code forbids it). An
event's jobs are created with the event, in its transaction (:func:`add_event`,
:func:`add_jobs`), so they survive crashes and restarts: one job per (event, message,
occurrence, hook).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import JsonValue

from clients.store.db import Database, InboxError, UnknownMessageError, dumps, transaction

__all__ = [
    "EVENTS",
    "EventName",
    "Events",
    "HookJob",
    "HookJobs",
    "HookState",
    "StoredEvent",
    "add_event",
    "add_jobs",
]

HookState = Literal["pending", "done", "failed", "skipped"]
EventName = Literal[
    "received",
    "reminded",
    "released",
    "escalation",
    "expired",
    "sent",
    "acknowledged",
    "log_inconsistent",
]
EVENTS: tuple[EventName, ...] = get_args(EventName)


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
    event: EventName = "received"
    occurrence: str = ""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    event: EventName
    msg_id: str
    occurrence: str
    at: int
    data: dict[str, JsonValue] = field(default_factory=dict)


def _job(row: sqlite3.Row) -> HookJob:
    return HookJob(
        msg_id=row["msg_id"],
        hook=row["hook"],
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        skipped_reason=row["skipped_reason"],
        event=row["event"],
        occurrence=row["occurrence"],
    )


def _event(row: sqlite3.Row) -> StoredEvent:
    return StoredEvent(
        event=row["event"],
        msg_id=row["msg_id"],
        occurrence=row["occurrence"],
        at=row["at"],
        data=json.loads(row["data"]),
    )


def add_jobs(
    conn: sqlite3.Connection,
    msg_id: str,
    hooks: Sequence[str],
    at: int,
    *,
    event: EventName = "received",
    occurrence: str = "",
) -> int:
    """(Worker thread, inside a transaction.) A pending job due at ``at`` for each hook
    that has none for the event yet; returns how many were added."""
    added = 0
    for name in hooks:
        added += conn.execute(
            "INSERT OR IGNORE INTO hook_jobs (event, msg_id, occurrence, hook, next_attempt_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (event, msg_id, occurrence, name, at),
        ).rowcount
    return added


def add_event(
    conn: sqlite3.Connection,
    event: EventName,
    msg_id: str,
    *,
    at: int,
    occurrence: str = "",
    data: Mapping[str, JsonValue] | None = None,
    hooks: Sequence[str] = (),
) -> bool:
    """(Worker thread, inside a transaction.) Record an event and its hook jobs, once.

    Returns False (and adds nothing) when the same (event, message, occurrence) is
    already recorded: an item pushed again is not a new event.
    """
    if event not in EVENTS:
        raise InboxError(f"unknown event {event!r}")
    new = (
        conn.execute(
            "INSERT OR IGNORE INTO events (event, msg_id, occurrence, at, data) "
            "VALUES (?, ?, ?, ?, ?)",
            (event, msg_id, occurrence, at, dumps(dict(data or {}))),
        ).rowcount
        == 1
    )
    if new:
        add_jobs(conn, msg_id, hooks, at, event=event, occurrence=occurrence)
    return new


class Events:
    """The events of one inbox (``inbox.events``), other than ``received``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        event: EventName,
        msg_id: str,
        *,
        at: int,
        occurrence: str = "",
        data: Mapping[str, JsonValue] | None = None,
        hooks: Sequence[str] = (),
    ) -> bool:
        """Record an event with a pending job for each of ``hooks``, in one transaction;
        True if new, False if the same event was recorded before (nothing is added)."""
        names = builtins.list(hooks)
        payload = dict(data or {})

        def tx(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                return add_event(
                    conn, event, msg_id, at=at, occurrence=occurrence, data=payload, hooks=names
                )

        return await self._db.run(tx)

    async def get(self, event: EventName, msg_id: str, occurrence: str = "") -> StoredEvent | None:
        def q(conn: sqlite3.Connection) -> StoredEvent | None:
            row = conn.execute(
                "SELECT * FROM events WHERE event = ? AND msg_id = ? AND occurrence = ?",
                (event, msg_id, occurrence),
            ).fetchone()
            return None if row is None else _event(row)

        return await self._db.run(q)

    async def of_messages(self, msg_ids: Iterable[str]) -> dict[str, builtins.list[StoredEvent]]:
        """Each message's events, oldest first (messages without any are left out)."""
        ids = sorted(set(msg_ids))

        def q(conn: sqlite3.Connection) -> dict[str, builtins.list[StoredEvent]]:
            out: dict[str, builtins.list[StoredEvent]] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(
                    f"SELECT * FROM events WHERE msg_id IN ({', '.join('?' * len(chunk))}) "
                    "ORDER BY at, event, occurrence",
                    chunk,
                ).fetchall()
                for r in rows:
                    out.setdefault(r["msg_id"], []).append(_event(r))
            return out

        return await self._db.run(q)

    async def of_message(self, msg_id: str) -> builtins.list[StoredEvent]:
        return (await self.of_messages([msg_id])).get(msg_id, [])

    async def latest(
        self, event: EventName, *, since: int = 0, limit: int = 200
    ) -> builtins.list[StoredEvent]:
        """Events of one kind recorded at or after ``since``, newest first."""

        def q(conn: sqlite3.Connection) -> builtins.list[StoredEvent]:
            rows = conn.execute(
                "SELECT * FROM events WHERE event = ? AND at >= ? ORDER BY at DESC LIMIT ?",
                (event, since, limit),
            ).fetchall()
            return [_event(r) for r in rows]

        return await self._db.run(q)


class HookJobs:
    """The hook-job queue of one inbox (``inbox.hook_jobs``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def schedule(self, msg_id: str, hook_names: Sequence[str], *, at: int = 0) -> int:
        """Add a pending ``received`` job, due at ``at``, for each hook that has none for
        the message yet.

        Returns how many were added. (A new message's jobs are normally created when it
        is stored, in the same transaction.)
        """
        names = builtins.list(hook_names)

        def tx(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                if (
                    conn.execute("SELECT 1 FROM messages WHERE id = ?", (msg_id,)).fetchone()
                    is None
                ):
                    raise UnknownMessageError(f"no message {msg_id} in the inbox")
                return add_jobs(conn, msg_id, names, at)

        return await self._db.run(tx)

    async def due(
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
            sql += " ORDER BY next_attempt_at, msg_id, event, occurrence, hook LIMIT ?"
            params.append(limit)
            return [_job(r) for r in conn.execute(sql, params).fetchall()]

        return await self._db.run(q)

    async def of_message(
        self, msg_id: str, *, event: EventName | None = None
    ) -> builtins.list[HookJob]:
        """Every hook job about one message (of one event, if given), whatever its state."""

        def q(conn: sqlite3.Connection) -> builtins.list[HookJob]:
            sql = "SELECT * FROM hook_jobs WHERE msg_id = ?"
            params: builtins.list[Any] = [msg_id]
            if event is not None:
                sql += " AND event = ?"
                params.append(event)
            rows = conn.execute(sql + " ORDER BY hook, event, occurrence", params).fetchall()
            return [_job(r) for r in rows]

        return await self._db.run(q)

    async def finish(
        self,
        msg_id: str,
        hook: str,
        *,
        ok: bool,
        error: str | None,
        next_attempt_at: int | None,
        skipped: str | None = None,
        event: EventName = "received",
        occurrence: str = "",
    ) -> HookJob:
        """Record the outcome of one attempt of a pending job; returns the updated job.

        * ``skipped``: the job will never run (the reason is kept); not counted as an attempt;
        * ``ok``: done;
        * failed with ``next_attempt_at``: stays pending, due then;
        * failed without: given up (``failed``).
        """
        key = (event, msg_id, occurrence, hook)
        where = "WHERE event = ? AND msg_id = ? AND occurrence = ? AND hook = ?"
        if skipped is not None:
            sql = (
                "UPDATE hook_jobs SET state = 'skipped', skipped_reason = ?, "
                f"next_attempt_at = NULL {where} AND state = 'pending'"
            )
            params: tuple[Any, ...] = (skipped, *key)
        else:
            if ok:
                state, due, err = "done", None, None
            elif next_attempt_at is not None:
                state, due, err = "pending", next_attempt_at, error
            else:
                state, due, err = "failed", None, error
            sql = (
                "UPDATE hook_jobs SET state = ?, attempts = attempts + 1, next_attempt_at = ?, "
                f"last_error = ? {where} AND state = 'pending'"
            )
            params = (state, due, err, *key)

        def tx(conn: sqlite3.Connection) -> HookJob:
            with transaction(conn):
                changed = conn.execute(sql, params).rowcount
                row = conn.execute(f"SELECT * FROM hook_jobs {where}", key).fetchone()
            if row is None:
                raise InboxError(f"no job for hook {hook} on message {msg_id} ({event})")
            if changed == 0:
                raise InboxError(f"the job for hook {hook} on message {msg_id} is not pending")
            return _job(row)

        return await self._db.run(tx)
