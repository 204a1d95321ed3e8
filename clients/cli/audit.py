"""``notice audit``: the local audit trail, who did what and when (:mod:`clients.store.audit`)."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime

import click
from rich.table import Table

from clients.cli.base import (
    MSGID,
    TIME,
    CliContext,
    existing_inbox,
    global_options,
    resolve_id,
    run,
)
from clients.cli.render import iso, stdout_console, text
from clients.refusal import RefusedError
from clients.store import AuditEntry, Inbox

__all__ = ["audit_cmd", "login_name"]


def login_name() -> str:
    """Who runs this command, as the system knows them (for the audit trail's detail)."""
    try:
        return getpass.getuser()[:100] or "unknown"
    except (OSError, KeyError):  # no login name, no passwd entry (a container)
        return "unknown"


def _cell(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def render_audit(entries: list[AuditEntry], as_json: bool) -> None:
    if as_json:
        for e in entries:
            line = {
                "seq": e.seq,
                "at": iso(e.at),
                "person": e.person,
                "action": e.action,
                "message_id": e.message_id,
                "detail": e.detail,
            }
            click.echo(json.dumps(line, ensure_ascii=True))
        return
    table = Table(title=f"Audit trail ({len(entries)}), newest first")
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("person")
    table.add_column("action", no_wrap=True)
    table.add_column("message", no_wrap=True)
    table.add_column("detail")
    for e in entries:
        table.add_row(_cell(e.at), text(e.person), e.action, e.message_id or "—", text(e.detail))
    stdout_console().print(table)


@click.command("audit")
@global_options
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=100,
    show_default=True,
    help="At most this many entries, newest first.",
)
@click.option("--person", help="Only the entries of this person (the name exactly as recorded).")
@click.option(
    "--message",
    "message",
    type=MSGID,
    metavar="MSGID",
    help="Only the entries about this message (or the first 8 or more characters of its id).",
)
@click.option("--since", type=TIME, help="Only the entries recorded at or after this time.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable: one JSON object a line.")
@click.pass_obj
def audit_cmd(
    obj: CliContext,
    limit: int,
    person: str | None,
    message: str | None,
    since: int | None,
    as_json: bool,
) -> None:
    """The local audit trail: who did what, and when, newest first.

    Every action a person takes is recorded in the inbox with their name: in the
    officer console, signing in and out (and failed sign-ins), opening a message,
    downloading an attachment, acknowledging, rejecting, sending and exporting
    evidence; on the command line, 'notice ack' (the --person given) and 'notice reject'
    (its --person, or the login name). The detail says how (console and address, or the
    command and the login name) and, for a rejection, the reason. Entries are never
    changed; the daemon's retention deletes those older than retention_days. Reads the
    local inbox; no passphrase is needed. Times are in UTC.
    """
    settings = obj.settings()
    path = existing_inbox(settings)
    if path is None:
        raise RefusedError(
            f"no inbox at {settings.inbox_path}: the daemon creates it when it first runs"
        )
    msg_id = None if message is None else resolve_id(settings, message, "any")

    async def q() -> list[AuditEntry]:
        async with await Inbox.open(path) as inbox:
            return await inbox.audit.list(
                limit=limit, person=person, message_id=msg_id, since=since
            )

    render_audit(run(q), as_json)
