"""Hook jobs: which delivery hook still has to hand which message to a local system.

A job is ``pending`` (due at ``next_attempt_at``) until it is ``done``, given up
(``failed``) or ``skipped`` (it will never run, e.g. a handling code forbids it). A new
message's jobs are created with the message, in its transaction (:func:`add_jobs`), so
they survive crashes and restarts.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from clients.store.db import Database, InboxError, UnknownMessageError, transaction

__all__ = ["HookJob", "HookJobs", "HookState", "add_jobs"]

HookState = Literal["pending", "done", "failed", "skipped"]


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


def _job(row: sqlite3.Row) -> HookJob:
    return HookJob(
        msg_id=row["msg_id"],
        hook=row["hook"],
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        skipped_reason=row["skipped_reason"],
    )


def add_jobs(conn: sqlite3.Connection, msg_id: str, hooks: Sequence[str], at: int) -> int:
    """(Worker thread, inside a transaction.) A pending job due at ``at`` for each hook
    that has none for the message yet; returns how many were added."""
    added = 0
    for name in hooks:
        added += conn.execute(
            "INSERT OR IGNORE INTO hook_jobs (msg_id, hook, next_attempt_at) VALUES (?, ?, ?)",
            (msg_id, name, at),
        ).rowcount
    return added


class HookJobs:
    """The hook-job queue of one inbox (``inbox.hook_jobs``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def schedule(self, msg_id: str, hook_names: Sequence[str], *, at: int = 0) -> int:
        """Add a pending job, due at ``at``, for each hook that has none for the message yet.

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
            sql += " ORDER BY next_attempt_at, msg_id, hook LIMIT ?"
            params.append(limit)
            return [_job(r) for r in conn.execute(sql, params).fetchall()]

        return await self._db.run(q)

    async def of_message(self, msg_id: str) -> builtins.list[HookJob]:
        """Every hook job of one message, whatever its state, by hook name."""

        def q(conn: sqlite3.Connection) -> builtins.list[HookJob]:
            rows = conn.execute(
                "SELECT * FROM hook_jobs WHERE msg_id = ? ORDER BY hook", (msg_id,)
            ).fetchall()
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
            with transaction(conn):
                changed = conn.execute(sql, params).rowcount
                row = conn.execute(
                    "SELECT * FROM hook_jobs WHERE msg_id = ? AND hook = ?", (msg_id, hook)
                ).fetchone()
            if row is None:
                raise InboxError(f"no job for hook {hook} on message {msg_id}")
            if changed == 0:
                raise InboxError(f"the job for hook {hook} on message {msg_id} is not pending")
            return _job(row)

        return await self._db.run(tx)
