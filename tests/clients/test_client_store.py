"""The local store: its numbered SQL migrations, upgrades of existing inbox files, indexed
lookups, and the message state derived from receipts.

The stores' behaviour (received, sent, hook jobs) is tested in test_inbox.py and
test_hooks.py; this file is about the file itself.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from clients.sender import message_state
from clients.store import SCHEMA_VERSION, Inbox, InboxError, InboxSchemaError, migrations
from clients.store.sent import SELECT_SENT_BY_ID
from tests.inboxfixture import deliver
from tests.netfixture import NOW, Network

# What the inbox code before the split wrote as schema version 1 (its in-code migration
# list), kept verbatim: files in the field look like this.
LEGACY_V1 = """
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
"""

MSG_ID = "01890a5d-ac96-774b-bcce-b302099a8057"


def _sql(path: Path, *statements: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run statements on the file with plain sqlite3 (worker thread only); the last one's rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows: list[tuple[Any, ...]] = []
        for statement in statements:
            rows = conn.execute(statement, params if statement is statements[-1] else ()).fetchall()
        return rows
    finally:
        conn.close()


def _make_legacy(path: Path) -> None:
    """An inbox file as the previous code left it: schema v1, a message, a sent message
    with a receipt, a pending hook job."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        for statement in LEGACY_V1.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("DELETE FROM version")
        conn.execute("INSERT INTO version (version) VALUES (1)")
        conn.execute(
            "INSERT INTO messages (id, sender, recipients, role, priority, created, expires, "
            "ack_by, received_at, handling, kind, content, attachments, envelope_hash, token) "
            "VALUES (?, 'it-tpc', '[\"fr-oclcc\"]', 'to', 'urgent', ?, ?, NULL, ?, '[]', "
            "'free_text', '{\"kind\":\"free_text\",\"text\":\"hello\"}', '[]', 'h1', 't1')",
            (MSG_ID, NOW, NOW + 86_400_000, NOW + 5),
        )
        conn.execute(
            "INSERT INTO hook_jobs (msg_id, hook, next_attempt_at) VALUES (?, 'case', ?)",
            (MSG_ID, NOW + 5),
        )
        conn.execute(
            "INSERT INTO sent (id, recipients, envelope_hash, created, priority, summary) "
            "VALUES ('01890a5d-ac96-774b-bcce-b302099a8058', '[\"fr-oclcc\"]', 'h2', ?, "
            "'routine', 'Message: hi')",
            (NOW,),
        )
        conn.execute(
            "INSERT INTO receipts (token_hash, msg_id, token, status, signer, at) "
            "VALUES ('th', '01890a5d-ac96-774b-bcce-b302099a8058', 'r1', 'accepted', 'relay', ?)",
            (NOW + 1,),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _schema(path: Path) -> list[tuple[Any, ...]]:
    return _sql(
        path,
        "SELECT type, name, tbl_name, sql FROM sqlite_master "
        "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
    )


# --- the shipped migrations ------------------------------------------------------------------


def test_schema_files_are_shipped_numbered_from_one_without_gaps() -> None:
    files = sorted(
        e.name for e in resources.files("clients.store.schema").iterdir() if e.name.endswith(".sql")
    )
    assert files and files[0] == "0001-initial.sql"
    found = migrations()
    assert [v for v, _, _ in found] == list(range(1, len(files) + 1))
    assert [name for _, name, _ in found] == files
    assert len(files) == SCHEMA_VERSION


async def test_a_new_inbox_is_created_private_at_the_newest_version(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    async with await Inbox.open(path) as inbox:
        assert await inbox.schema_version() == SCHEMA_VERSION
    assert stat.S_IMODE((await asyncio.to_thread(os.stat, path)).st_mode) == 0o600
    assert await asyncio.to_thread(_sql, path, "SELECT version FROM version") == [(SCHEMA_VERSION,)]


# --- upgrading files written by earlier versions -----------------------------------------------


async def test_an_inbox_written_by_the_previous_code_opens_with_its_data(
    tmp_path: Path,
) -> None:
    legacy = tmp_path / "legacy.sqlite3"
    await asyncio.to_thread(_make_legacy, legacy)
    fresh = tmp_path / "fresh.sqlite3"
    async with await Inbox.open(fresh):
        pass

    async with await Inbox.open(legacy) as inbox:
        assert await inbox.schema_version() == SCHEMA_VERSION
        msg = await inbox.received.get(MSG_ID)
        assert msg is not None
        assert (msg.sender, msg.priority, msg.state, msg.content) == (
            "it-tpc",
            "urgent",
            "new",
            {"kind": "free_text", "text": "hello"},
        )
        [job] = await inbox.hook_jobs.due(NOW + 5)
        assert (job.msg_id, job.hook, job.state) == (MSG_ID, "case", "pending")
        sent = await inbox.sent.get("01890a5d-ac96-774b-bcce-b302099a8058")
        assert sent is not None
        assert (sent.summary, sent.last_status, sent.last_status_at) == (
            "Message: hi",
            "accepted",
            NOW + 1,
        )
        # And it keeps working: a decision is recorded.
        decided = await inbox.received.mark_acknowledged(MSG_ID, person="Lt. Rossi", at=NOW + 9)
        assert decided.state == "acknowledged"

    # The upgraded file has exactly the schema of a file created new, one version row,
    # and is still private.
    assert await asyncio.to_thread(_schema, legacy) == await asyncio.to_thread(_schema, fresh)
    assert await asyncio.to_thread(_sql, legacy, "SELECT version FROM version") == [
        (SCHEMA_VERSION,)
    ]
    assert stat.S_IMODE((await asyncio.to_thread(os.stat, legacy)).st_mode) == 0o600


async def test_later_migrations_are_applied_in_order_each_once(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    await asyncio.to_thread(_make_legacy, path)
    shipped = migrations()
    n = len(shipped)
    later = [
        *shipped,
        (
            n + 2,
            f"{n + 2:04d}-b.sql",
            "UPDATE sent SET summary = summary || ' (' || note || ')';\n",
        ),
        (
            n + 1,
            f"{n + 1:04d}-a.sql",
            "ALTER TABLE sent ADD COLUMN note TEXT;\nUPDATE sent SET note = 'a';\n",
        ),
    ]
    async with await Inbox.open(path, schema=later) as inbox:
        assert await inbox.schema_version() == n + 2
    # a (listed last) ran before b, which reads a's column; b ran once
    assert await asyncio.to_thread(_sql, path, "SELECT note, summary FROM sent") == [
        ("a", "Message: hi (a)")
    ]
    async with await Inbox.open(path, schema=later):  # nothing runs twice
        pass
    assert await asyncio.to_thread(_sql, path, "SELECT summary FROM sent") == [("Message: hi (a)",)]


async def test_a_failing_migration_leaves_the_previous_version_intact(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    await asyncio.to_thread(_make_legacy, path)
    n = len(migrations())
    broken = [
        *migrations(),
        (n + 1, f"{n + 1:04d}-broken.sql", "CREATE TABLE extra (x INTEGER);\nNOT SQL AT ALL;\n"),
    ]
    with pytest.raises(InboxError, match="syntax error"):
        await Inbox.open(path, schema=broken)
    assert await asyncio.to_thread(_sql, path, "SELECT version FROM version") == [(n,)]
    assert await asyncio.to_thread(
        _sql, path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'extra'"
    ) == [(0,)]
    async with await Inbox.open(path) as inbox:  # the shipped code still opens it
        assert await inbox.received.get(MSG_ID) is not None


async def test_a_newer_schema_is_refused_and_the_file_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    await asyncio.to_thread(_make_legacy, path)
    n = len(migrations())
    newer = [*migrations(), (n + 1, f"{n + 1:04d}-x.sql", "CREATE TABLE later (x INTEGER);\n")]
    async with await Inbox.open(path, schema=newer):
        pass
    before = await asyncio.to_thread(_schema, path)
    with pytest.raises(InboxSchemaError, match=f"version {n + 1}, newer than this software"):
        await Inbox.open(path)
    assert await asyncio.to_thread(_schema, path) == before


# --- indexed lookups ---------------------------------------------------------------------------


async def test_one_sent_message_is_found_through_indexes_not_a_scan(
    net: Network, tmp_path: Path
) -> None:
    path = tmp_path / "inbox.sqlite3"
    async with await Inbox.open(path) as inbox:
        for i in range(3):
            opened, _ = deliver(net, now=NOW + i)
            await inbox.sent.record(
                opened.header.id,
                to=["fr-oclcc"],
                envelope_hash=opened.hash,
                created=NOW + i,
                priority="routine",
                summary=f"n{i}",
            )
        assert await inbox.sent.get(opened.header.id) is not None
    plan = await asyncio.to_thread(
        _sql, path, "EXPLAIN QUERY PLAN " + SELECT_SENT_BY_ID, params=(MSG_ID,)
    )
    steps = [row[-1] for row in plan]
    assert not [s for s in steps if s.startswith("SCAN")], steps
    assert any(s.startswith("SEARCH s USING INDEX sqlite_autoindex_sent_1 (id=?)") for s in steps)
    assert any("receipts_by_message (msg_id=?)" in s for s in steps), steps


# --- the state of a sent message, from its receipts --------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "state"),
    [
        ([], "sent"),
        (["accepted"], "accepted"),
        (["accepted", "delivered"], "delivered"),
        (["delivered"], "delivered"),
        (["accepted", "delivered", "acknowledged"], "acknowledged"),
        (["accepted", "acknowledged", "delivered"], "acknowledged"),
        (["accepted", "delivered", "rejected"], "rejected"),
        (["accepted", "rejected", "acknowledged"], "rejected"),
        (["accepted", "expired"], "expired"),
        (["accepted", "escalated"], "accepted"),
        (["accepted", "delivered", "escalated", "acknowledged"], "acknowledged"),
    ],
)
def test_message_state_follows_the_relay_rules(statuses: list[str], state: str) -> None:
    assert message_state(statuses) == state
