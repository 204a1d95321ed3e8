"""The local audit trail (``inbox.audit``, ``notice audit``): every action recorded with
the person's name, newest first, refused when malformed, pruned by retention, kept
across the schema upgrade; ``notice ack`` and ``notice reject`` record their decision.

Real SQLite files in ``tmp_path``; the CLI runs through ``clients.cli.main`` in a worker
thread (it calls ``asyncio.run``), against a relay that is not running (a decision is
kept and its receipt left to the daemon).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clients.cli import main
from clients.retention import RetentionWorker
from clients.store import (
    SCHEMA_VERSION,
    AuditEntry,
    Inbox,
    InboxError,
    migrations,
)
from keys.encoding import b64e, uuid7
from keys.keystore import save_keystore
from tests.inboxfixture import deliver
from tests.netfixture import NOW, Network

DAY = 86_400_000
MINUTE = 60_000
PASSPHRASE = "audit test passphrase"
MSG_A = uuid7(ms=NOW)
MSG_B = uuid7(ms=NOW + 1)


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    box = await Inbox.open(tmp_path / "inbox.sqlite3")
    yield box
    await box.close()


def _trail(entries: list[AuditEntry]) -> list[tuple[str, str, str | None]]:
    return [(e.person, e.action, e.message_id) for e in entries]


# --- recording and listing ----------------------------------------------------------------


async def test_entries_are_listed_newest_first_and_filtered(inbox: Inbox) -> None:
    await inbox.audit.record(person="Lt. Rossi", action="signed_in", at=NOW, detail="password")
    await inbox.audit.record(person="Lt. Rossi", action="opened", at=NOW + 1, message_id=MSG_A)
    await inbox.audit.record(person="Cne Moreau", action="opened", at=NOW + 2, message_id=MSG_B)
    # Two at the same millisecond: the one recorded later is newer.
    await inbox.audit.record(
        person="Lt. Rossi", action="acknowledged", at=NOW + 3, message_id=MSG_A
    )
    await inbox.audit.record(person="Lt. Rossi", action="signed_out", at=NOW + 3)

    every = await inbox.audit.list()
    assert _trail(every) == [
        ("Lt. Rossi", "signed_out", None),
        ("Lt. Rossi", "acknowledged", MSG_A),
        ("Cne Moreau", "opened", MSG_B),
        ("Lt. Rossi", "opened", MSG_A),
        ("Lt. Rossi", "signed_in", None),
    ]
    first = every[-1]
    assert (first.at, first.detail) == (NOW, "password")
    assert [e.seq for e in every] == sorted((e.seq for e in every), reverse=True)

    assert _trail(await inbox.audit.list(limit=2)) == _trail(every[:2])
    assert await inbox.audit.list(limit=0) == []
    assert {e.person for e in await inbox.audit.list(person="Lt. Rossi")} == {"Lt. Rossi"}
    assert len(await inbox.audit.list(person="Lt. Rossi")) == 4
    assert await inbox.audit.list(person="lt. rossi") == []  # the name exactly
    assert _trail(await inbox.audit.list(message_id=MSG_A)) == [
        ("Lt. Rossi", "acknowledged", MSG_A),
        ("Lt. Rossi", "opened", MSG_A),
    ]
    assert _trail(await inbox.audit.list(since=NOW + 2)) == _trail(every[:3])
    assert _trail(await inbox.audit.list(person="Cne Moreau", since=NOW + 3)) == []
    assert _trail(await inbox.audit.list(person="Lt. Rossi", message_id=MSG_A, since=NOW + 2)) == [
        ("Lt. Rossi", "acknowledged", MSG_A)
    ]


async def test_a_long_detail_is_cut_and_entries_are_frozen(inbox: Inbox) -> None:
    await inbox.audit.record(
        person="P", action="rejected", at=NOW, message_id=MSG_A, detail="x" * 900
    )
    [entry] = await inbox.audit.list()
    assert entry.detail == "x" * 500
    with pytest.raises(AttributeError):
        entry.person = "someone else"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"person": ""}, "1 to 200 characters"),
        ({"person": "x" * 201}, "1 to 200 characters"),
        ({"person": "   "}, "blank"),
        ({"action": "deleted"}, "unknown audit action"),
        ({"action": ""}, "unknown audit action"),
        ({"at": -1}, "Unix milliseconds"),
        ({"message_id": "not-an-id"}, "not a message id"),
        ({"message_id": ""}, "not a message id"),
    ],
)
async def test_bad_input_is_refused_and_nothing_recorded(
    inbox: Inbox, kwargs: dict[str, Any], complaint: str
) -> None:
    entry: dict[str, Any] = {"person": "Lt. Rossi", "action": "opened", "at": NOW} | kwargs
    with pytest.raises(InboxError, match=complaint):
        await inbox.audit.record(**entry)
    assert await inbox.audit.list() == []


async def test_a_negative_limit_is_refused(inbox: Inbox) -> None:
    with pytest.raises(InboxError, match="negative"):
        await inbox.audit.list(limit=-1)


async def test_the_trail_is_kept_across_a_reopen_and_a_closed_inbox_refuses(
    tmp_path: Path,
) -> None:
    path = tmp_path / "inbox.sqlite3"
    async with await Inbox.open(path) as box:
        await box.audit.record(person="Lt. Rossi", action="sent", at=NOW, message_id=MSG_A)
    async with await Inbox.open(path) as box:
        assert _trail(await box.audit.list()) == [("Lt. Rossi", "sent", MSG_A)]
    with pytest.raises(InboxError, match="closed"):
        await box.audit.record(person="Lt. Rossi", action="sent", at=NOW)


# --- pruning and retention ------------------------------------------------------------------


async def test_prune_deletes_only_older_entries_and_seq_is_never_reused(inbox: Inbox) -> None:
    for i in range(4):
        await inbox.audit.record(person="P", action="opened", at=NOW + i * DAY, message_id=MSG_A)
    assert await inbox.audit.prune(NOW + 2 * DAY) == 2  # strictly older than the cut-off
    left = await inbox.audit.list()
    assert [e.at for e in left] == [NOW + 3 * DAY, NOW + 2 * DAY]
    assert await inbox.audit.prune(NOW) == 0
    await inbox.audit.prune(NOW + 10 * DAY)
    await inbox.audit.record(person="P", action="signed_in", at=NOW + 11 * DAY)
    [fresh] = await inbox.audit.list()
    assert fresh.seq == 5  # AUTOINCREMENT: after a gap, never a pruned entry's number


async def test_the_daemon_retention_prunes_old_audit_entries(inbox: Inbox) -> None:
    later = NOW + 400 * DAY + MINUTE
    await inbox.audit.record(person="Old", action="signed_in", at=NOW)
    await inbox.audit.record(person="Recent", action="signed_in", at=later - DAY)
    worker = RetentionWorker(inbox, days=400, archive_dir=None, clock=lambda: later)
    run = await worker.run_once()
    assert run.audit == 1 and worker.stats.audit == 1
    assert _trail(await inbox.audit.list()) == [("Recent", "signed_in", None)]
    assert (await worker.run_once()).audit == 0


async def test_retention_days_0_keeps_every_audit_entry(inbox: Inbox) -> None:
    await inbox.audit.record(person="Old", action="signed_in", at=0)
    worker = RetentionWorker(inbox, days=0, archive_dir=None, clock=lambda: NOW + 9999 * DAY)
    await asyncio.wait_for(worker.run_forever(asyncio.Event(), interval=0.01), 5)
    assert len(await inbox.audit.list()) == 1


# --- the schema upgrade ---------------------------------------------------------------------


def _sql(path: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


async def test_an_inbox_of_schema_3_is_upgraded_with_its_data(net: Network, tmp_path: Path) -> None:
    assert SCHEMA_VERSION >= 4
    [name] = [n for v, n, _ in migrations() if v == 4]
    assert name == "0004-audit.sql"
    path = tmp_path / "inbox.sqlite3"
    opened, token = deliver(net)
    msg_id = opened.header.id
    async with await Inbox.open(path, schema=migrations()[:3]) as old:
        assert await old.schema_version() == 3
        assert await old.received.store(opened, token, received_at=NOW, hooks=["case"])
        await old.events.record("reminded", msg_id, at=NOW + 1, occurrence="7")
    assert await asyncio.to_thread(
        _sql, path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'audit'"
    ) == [(0,)]

    async with await Inbox.open(path) as box:
        assert await box.schema_version() == SCHEMA_VERSION
        msg = await box.received.get(msg_id)
        assert msg is not None and msg.state == "new" and msg.content == opened.plaintext.content
        assert [e.event for e in await box.events.of_message(msg_id)] == ["reminded"]
        assert [j.hook for j in await box.hook_jobs.of_message(msg_id)] == ["case"]
        assert await box.audit.list() == []
        await box.received.mark_acknowledged(msg_id, person="Lt. Rossi", at=NOW + 2)
        await box.audit.record(
            person="Lt. Rossi", action="acknowledged", at=NOW + 2, message_id=msg_id
        )
        assert _trail(await box.audit.list()) == [("Lt. Rossi", "acknowledged", msg_id)]
    assert await asyncio.to_thread(_sql, path, "SELECT version FROM version") == [(SCHEMA_VERSION,)]
    indexes = await asyncio.to_thread(
        _sql, path, "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit'"
    )
    assert indexes == [("audit_by_time",)]


# --- the command line -----------------------------------------------------------------------


class Cli:
    """Runs ``notice --config <config> ...`` as fr-oclcc, with a fixed clock."""

    def __init__(self, capsys: pytest.CaptureFixture[str], config: Path, data_dir: Path) -> None:
        self.capsys = capsys
        self.config = config
        self.data_dir = data_dir
        self.now = NOW + MINUTE

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        argv = ["--config", str(self.config), *args]
        code = await asyncio.to_thread(main, argv, clock=lambda: self.now)
        out, err = self.capsys.readouterr()
        return code, out, err

    @property
    def inbox_path(self) -> Path:
        return self.data_dir / "inbox.sqlite3"


def _write_authority(home: Path, net: Network, aid: str) -> tuple[Path, Path]:
    """Keystore, passphrase and config for ``aid`` against a relay that is not running."""
    home.mkdir(parents=True, exist_ok=True)
    save_keystore(home / "authority.ks", net[aid], PASSPHRASE, strength="test", overwrite=True)
    (home / "passphrase").write_text(PASSPHRASE + "\n")
    (home / "passphrase").chmod(0o600)
    data_dir = home / "data"
    settings = {
        "relay_url": "http://127.0.0.1:9",
        "keystore": str(home / "authority.ks"),
        "passphrase_file": str(home / "passphrase"),
        "root_key": b64e(net.root.signing_key().public),
        "data_dir": str(data_dir),
    }
    config = home / "notice.toml"
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return config, data_dir


@pytest.fixture
async def cli(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    net: Network,
    monkeypatch: pytest.MonkeyPatch,
) -> Cli:
    for name in list(os.environ):
        if name.startswith("CPAR_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LOGNAME", "duty-officer")  # getpass.getuser() reads it first
    config, data_dir = await asyncio.to_thread(_write_authority, tmp_path / "fr", net, "fr-oclcc")
    return Cli(capsys, config, data_dir)


def _one_line_refusal(code: int, out: str, err: str) -> str:
    assert code == 1, (code, out, err)
    assert out == "" and err.startswith("notice: error: ") and err.count("\n") == 1, err
    return err


async def test_notice_audit_without_an_inbox_or_with_a_broken_one_is_one_line(cli: Cli) -> None:
    err = _one_line_refusal(*await cli("audit"))
    assert "no inbox at" in err
    assert not await asyncio.to_thread(cli.inbox_path.exists)  # reading never creates one

    def garble() -> None:
        cli.data_dir.mkdir(parents=True)
        cli.inbox_path.write_bytes(b"this is not a database " * 100)

    await asyncio.to_thread(garble)
    err = _one_line_refusal(*await cli("audit", "--json"))
    assert "inbox" in err


async def test_notice_audit_help_says_what_is_recorded(cli: Cli) -> None:
    code, out, _ = await cli("audit", "--help")
    assert code == 0 and "Usage: notice audit" in out
    for word in ("--person", "--message", "--limit", "--json", "acknowledging", "retention_days"):
        assert word in out
    code, out, _ = await cli("--help")
    assert code == 0 and "  audit " in out


async def test_notice_audit_prints_a_table_and_json_lines(cli: Cli) -> None:
    async with await Inbox.open(cli.inbox_path) as box:
        await box.audit.record(person="Lt. Rossi", action="signed_in", at=NOW, detail="password")
        await box.audit.record(person="Lt. Rossi", action="opened", at=NOW + 1000, message_id=MSG_A)
        await box.audit.record(
            person="Cne \x1b[31mMoreau", action="downloaded", at=NOW + 2000, message_id=MSG_B
        )

    code, out, err = await cli("audit")
    assert code == 0, err
    assert "Audit trail (3), newest first" in out and "at (UTC)" in out
    assert "2027-01-15 08:00:00" in out and "2027-01-15 08:00:02" in out
    assert "Lt. Rossi" in out and "signed_in" in out and "password" in out and MSG_A in out
    assert "\x1b" not in out and "Cne \ufffd[31mMoreau" in out  # a terminal escape is defused
    assert out.index("downloaded") < out.index("opened") < out.index("signed_in")

    code, out, err = await cli("audit", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {
        "seq": 3,
        "at": "2027-01-15T08:00:02.000Z",
        "person": "Cne \x1b[31mMoreau",
        "action": "downloaded",
        "message_id": MSG_B,
        "detail": "",
    }
    assert [x["action"] for x in lines] == ["downloaded", "opened", "signed_in"]

    code, out, _ = await cli("audit", "--json", "--person", "Lt. Rossi", "--limit", "1")
    assert code == 0 and [json.loads(x)["action"] for x in out.splitlines()] == ["opened"]
    code, out, _ = await cli("audit", "--json", "--message", MSG_A)
    assert code == 0 and [json.loads(x)["message_id"] for x in out.splitlines()] == [MSG_A]
    code, out, _ = await cli("audit", "--json", "--since", "2027-01-15T08:00:01Z")
    assert code == 0 and len(out.splitlines()) == 2
    code, out, _ = await cli("audit", "--json", "--person", "nobody")
    assert code == 0 and out == ""
    code, out, _ = await cli("audit", "--person", "nobody")
    assert code == 0 and "Audit trail (0)" in out
    code, _, err = await cli("audit", "--limit", "0")
    assert code == 2 and "--limit" in err


async def test_notice_ack_and_reject_are_recorded_with_the_person(cli: Cli, net: Network) -> None:
    first, first_token = deliver(net, now=NOW)
    second, second_token = deliver(net, now=NOW + 1)
    third, third_token = deliver(net, now=NOW + 2)
    async with await Inbox.open(cli.inbox_path) as box:
        for opened, token in ((first, first_token), (second, second_token), (third, third_token)):
            assert await box.received.store(opened, token, received_at=NOW + 5)
    a, b, c = first.header.id, second.header.id, third.header.id

    # The relay is down: the decision is kept (exit 0) and recorded in the trail.
    code, out, err = await cli("ack", a, "--person", " Lt. Rossi ")
    assert code == 0, err
    assert "Acknowledged" in out
    code, _, err = await cli("reject", b[:13], "--reason", "Not competent")
    assert code == 0, err
    cli.now += 1
    code, _, err = await cli("reject", c, "--reason", "Duplicate", "--person", "Cne Moreau")
    assert code == 0, err
    # A refused decision is not recorded.
    _one_line_refusal(*await cli("ack", a, "--person", "Someone Else"))
    _one_line_refusal(*await cli("reject", a, "--reason", "x", "--person", "y" * 201))

    async with await Inbox.open(cli.inbox_path) as box:
        trail = await box.audit.list()
    assert _trail(trail) == [
        ("Cne Moreau", "rejected", c),
        ("duty-officer", "rejected", b),
        ("Lt. Rossi", "acknowledged", a),
    ]
    assert trail[0].detail == "notice reject, login duty-officer: Duplicate"
    assert trail[1].detail == "notice reject, login duty-officer: Not competent"
    assert trail[2].detail == "notice ack, login duty-officer"
    assert trail[2].at == NOW + MINUTE and trail[0].at == NOW + MINUTE + 1

    # The same decision again is recorded again (it re-sends the receipt).
    code, out, err = await cli("ack", a, "--person", "Lt. Rossi")
    assert code == 0, err
    assert "ambiguous" in _one_line_refusal(*await cli("audit", "--message", a[:8]))
    code, out, _ = await cli("audit", "--json", "--message", a[:13])
    assert [json.loads(x)["detail"] for x in out.splitlines()] == [
        "notice ack, login duty-officer (again)",
        "notice ack, login duty-officer",
    ]
