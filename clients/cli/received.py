"""``notice inbox``, ``show``, ``ack`` and ``reject``: working the received messages."""

from __future__ import annotations

from pathlib import Path

import click

from clients.cli.base import MSGID, CliContext, existing_inbox, run
from clients.cli.render import (
    render_decision,
    render_inbox,
    render_message,
    render_notice_only,
)
from clients.decisions import decide
from clients.escalations import InboxRow, inbox_view
from clients.store import Inbox, InboxMessage, StoredEvent, UnknownMessageError


@click.command("inbox")
@click.option("--all", "show_all", is_flag=True, help="Also acknowledged and rejected messages.")
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="At most this many, most urgent first.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def inbox_cmd(obj: CliContext, show_all: bool, limit: int, as_json: bool) -> None:
    """Received messages, most urgent first: those still to acknowledge (all with --all).

    Sorted by priority, then by how overdue (past the ack-by, or past the first
    reminder). Shows reminders ("reminded x2"), releases to you as a fallback, and
    escalation notices to you as deputy, duty desk or supervisor (of the last 24 hours;
    all with --all). Reads the local inbox that the daemon fills; no passphrase is needed.
    """
    settings = obj.settings()
    path = existing_inbox(settings)
    rows: list[InboxRow] = []
    if path is not None:

        async def q() -> list[InboxRow]:
            async with await Inbox.open(path) as inbox:
                return await inbox_view(inbox, now=obj.clock(), limit=limit, show_all=show_all)

        rows = run(q)
    render_inbox(rows, show_all, as_json)


async def _get_message(
    path: Path | None, msg_id: str
) -> tuple[InboxMessage | None, list[Path], list[StoredEvent]]:
    """The stored message (if we hold it), where the daemon puts each of its attachments,
    and the escalation events about it."""
    if path is None:
        raise UnknownMessageError(f"no message {msg_id} in the inbox")
    async with await Inbox.open(path) as inbox:
        msg = await inbox.received.get(msg_id)
        events = await inbox.events.of_message(msg_id)
        if msg is None:
            if not events:
                raise UnknownMessageError(f"no message {msg_id} in the inbox")
            return None, [], events
        return msg, [inbox.attachment_path(msg.id, a.name) for a in msg.attachments], events


@click.command("show")
@click.argument("msg_id", type=MSGID, metavar="MSGID")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def show_cmd(obj: CliContext, msg_id: str, as_json: bool) -> None:
    """One received message in full: handling codes first, then the notice and attachments.

    Handling codes travel with the message and bind the recipient (e.g. no onward sharing
    without the originator's consent); an unknown code is to be treated as restricted.
    Attachments show their local path once the daemon has downloaded them.
    """
    settings = obj.settings()
    path = existing_inbox(settings)
    msg, paths, events = run(lambda: _get_message(path, msg_id))
    if msg is None:
        render_notice_only(msg_id, events, as_json)
        return
    files = [p if p.is_file() else None for p in paths]
    render_message(msg, files, as_json, events)


@click.command("ack")
@click.argument("msg_id", type=MSGID, metavar="MSGID")
@click.option("--person", required=True, help="Who takes the message in hand (name, rank, unit).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def ack_cmd(obj: CliContext, msg_id: str, person: str, as_json: bool) -> None:
    """Acknowledge a received message: a named person takes it in hand.

    Records the decision in the local inbox (final), signs an 'acknowledged' receipt
    naming the person and sends it to the relay for the sender. If sending fails the
    local decision stays; run the same command again to re-send the receipt.
    """
    settings = obj.settings()
    identity = obj.identity(settings)
    person = person.strip()
    path = existing_inbox(settings)
    d = run(
        lambda: decide(
            settings, identity, path, msg_id, "acknowledged", person=person, clock=obj.clock
        )
    )
    render_decision(d, as_json)


@click.command("reject")
@click.argument("msg_id", type=MSGID, metavar="MSGID")
@click.option("--reason", required=True, help="Why the message is rejected (sent to the sender).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def reject_cmd(obj: CliContext, msg_id: str, reason: str, as_json: bool) -> None:
    """Reject a received message, with a reason the sender sees.

    Records the decision in the local inbox (final), signs a 'rejected' receipt with the
    reason and sends it to the relay. If sending fails the local decision stays; run the
    same command again to re-send the receipt.
    """
    settings = obj.settings()
    identity = obj.identity(settings)
    reason = reason.strip()
    path = existing_inbox(settings)
    d = run(
        lambda: decide(settings, identity, path, msg_id, "rejected", reason=reason, clock=obj.clock)
    )
    render_decision(d, as_json)
