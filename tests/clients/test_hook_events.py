"""Hook events: each hook runs only for the events it names, gets the event (env, JSON,
file name), once per event; an inbox of schema 1 keeps its jobs as ``received`` ones."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.hooks import CommandHook, FileHook, HookRunner, fire_event, parse_hooks
from clients.store import SCHEMA_VERSION, Inbox, migrations
from tests.inboxfixture import deliver
from tests.netfixture import NOW, Network

COPY = (
    "import json, os, sys\n"
    "data = sys.stdin.buffer.read().decode()\n"
    "with open(os.environ['OUT'], 'a') as fh:\n"
    "    fh.write(json.dumps({'stdin': data, 'event': os.environ['CPAR_EVENT'],"
    " 'id': os.environ['CPAR_MESSAGE_ID']}) + '\\n')\n"
)


class Clock:
    def __init__(self, now: int = NOW + 5000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    box = await Inbox.open(tmp_path / "daemon" / "inbox.db")
    yield box
    await box.close()


async def _lines(path: Path) -> list[dict[str, str]]:
    text = await asyncio.to_thread(path.read_text)
    return [json.loads(line) for line in text.splitlines()]


async def test_a_hook_runs_only_for_its_events_and_gets_the_event(
    net: Network, inbox: Inbox, tmp_path: Path
) -> None:
    out = tmp_path / "runs.jsonl"
    pager = CommandHook(
        type="command",
        name="pager",
        argv=[sys.executable, "-c", COPY],
        env={"OUT": str(out)},
        events=["reminded", "escalation"],
    )
    drop = FileHook(type="file", name="drop", directory=tmp_path / "drop")  # every event
    opened, token = deliver(net)
    msg_id = opened.header.id
    async with HookRunner(inbox, [pager, drop], clock=Clock()) as runner:
        assert runner.hook_names == ["drop"]
        assert await inbox.received.store(
            opened, token, received_at=NOW + 2000, hooks=runner.hook_names
        )
        assert await runner.fire("reminded", msg_id, occurrence="7", data={"note": "n"})
        assert not await runner.fire("reminded", msg_id, occurrence="7")  # the same push
        assert await runner.fire("escalation", "01a3185c-5000-7000-8000-000000000001")
        assert await runner.run_due() == 5  # drop x3, pager x2
        assert await runner.run_due() == 0
    runs = await _lines(out)
    assert sorted((r["event"], r["id"]) for r in runs) == [
        ("escalation", "01a3185c-5000-7000-8000-000000000001"),
        ("reminded", msg_id),
    ]
    reminded = next(json.loads(r["stdin"]) for r in runs if r["event"] == "reminded")
    assert (reminded["event"], reminded["occurrence"], reminded["details"]) == (
        "reminded",
        "7",
        {"note": "n"},
    )
    assert reminded["sender"] == "it-tpc"  # the message is in the inbox: it comes along
    files = sorted(
        p.name for p in await asyncio.to_thread(lambda: list((tmp_path / "drop").iterdir()))
    )
    assert files == [
        "01a3185c-5000-7000-8000-000000000001.escalation.json",
        f"{msg_id}.json",
        f"{msg_id}.reminded.7.json",
    ]


async def test_fire_event_from_another_process_leaves_jobs_for_the_daemon(
    net: Network, inbox: Inbox, tmp_path: Path
) -> None:
    hooks = parse_hooks(
        [
            {"type": "file", "name": "all", "directory": str(tmp_path / "all")},
            {
                "type": "file",
                "name": "acks",
                "directory": str(tmp_path / "a"),
                "events": ["acknowledged"],
            },
        ]
    )
    msg = "01a3185c-5000-7000-8000-000000000002"
    assert await fire_event(inbox, hooks, "sent", msg, at=NOW, data={"to": ["fr-oclcc"]})
    jobs = await inbox.hook_jobs.due(NOW)
    assert [(j.hook, j.event) for j in jobs] == [("all", "sent")]
    with pytest.raises(ValueError, match="unknown event"):
        await fire_event(inbox, hooks, "paged", msg, at=NOW)  # type: ignore[arg-type]


def _v1_with_a_job(path: Path, msg_id: str) -> None:
    [(_, _, sql)] = [m for m in migrations() if m[0] == 1]
    conn = sqlite3.connect(path)
    for statement in sql.split(";\n"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO version (version) VALUES (1)")
    conn.execute(
        "INSERT INTO messages (id, sender, recipients, role, priority, created, expires, "
        "received_at, handling, content, attachments, envelope_hash, token) VALUES "
        "(?, 'it-tpc', '[]', 'to', 'routine', 0, 1, 0, '[]', '{}', '[]', 'h', 't')",
        (msg_id,),
    )
    conn.execute(
        "INSERT INTO hook_jobs (msg_id, hook, state, attempts, next_attempt_at) "
        "VALUES (?, 'drop', 'pending', 2, 5)",
        (msg_id,),
    )
    conn.commit()
    conn.close()


async def test_an_inbox_of_schema_1_keeps_its_hook_jobs(tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    msg = "01a3185c-5000-7000-8000-000000000003"
    await asyncio.to_thread(_v1_with_a_job, path, msg)
    async with await Inbox.open(path) as box:
        assert await box.schema_version() == SCHEMA_VERSION
        [job] = await box.hook_jobs.of_message(msg)
        assert (job.event, job.occurrence, job.state, job.attempts) == (
            "received",
            "",
            "pending",
            2,
        )
        await box.hook_jobs.finish(msg, "drop", ok=True, error=None, next_attempt_at=None)
