"""``notice inbox``, ``show``, ``ack`` and ``reject``: working the received messages.

A decision taken here is also recorded in the local audit trail (``notice audit``), with
the person's name: ``ack``'s ``--person``, ``reject``'s ``--person`` or the login name.
"""

from __future__ import annotations

from pathlib import Path

import click

from clients.cli.audit import login_name
from clients.cli.base import MSGID, CliContext, existing_inbox, global_options, resolve_id, run
from clients.cli.render import (
    render_decision,
    render_inbox,
    render_message,
    render_notice_only,
)
from clients.decisions import Actor, decide
from clients.escalations import InboxRow, inbox_view
from clients.refusal import RefusedError
from clients.store import Inbox, InboxMessage, ReceiptUpload, StoredEvent, UnknownMessageError
from clients.store.received import MAX_PERSON


@click.command("inbox")
@global_options
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
    uploads: dict[str, ReceiptUpload] = {}
    if path is not None:

        async def q() -> tuple[list[InboxRow], dict[str, ReceiptUpload]]:
            async with await Inbox.open(path) as inbox:
                # A decision whose receipt the relay has not confirmed is still to watch.
                waiting = {u.msg_id: u for u in await inbox.uploads.unconfirmed()}
                found = await inbox_view(
                    inbox, now=obj.clock(), limit=limit, show_all=show_all, include=waiting
                )
                return found, waiting

        rows, uploads = run(q)
    render_inbox(rows, show_all, as_json, uploads=uploads)


async def _get_message(
    path: Path | None, msg_id: str
) -> tuple[InboxMessage | None, list[Path], list[StoredEvent], ReceiptUpload | None]:
    """The stored message (if we hold it), where the daemon puts each of its attachments,
    the escalation events about it, and the upload of its decision's receipt (if decided
    here)."""
    if path is None:
        raise UnknownMessageError(f"no message {msg_id} in the inbox")
    async with await Inbox.open(path) as inbox:
        msg = await inbox.received.get(msg_id)
        events = await inbox.events.of_message(msg_id)
        if msg is None:
            if not events:
                raise UnknownMessageError(f"no message {msg_id} in the inbox")
            return None, [], events, None
        upload = await inbox.uploads.get(msg_id)
        paths = [inbox.attachment_path(msg.id, a.name) for a in msg.attachments]
        return msg, paths, events, upload


@click.command("show")
@global_options
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
    msg_id = resolve_id(settings, msg_id, "received")
    path = existing_inbox(settings)
    msg, paths, events, upload = run(lambda: _get_message(path, msg_id))
    if msg is None:
        render_notice_only(msg_id, events, as_json)
        return
    files = [p if p.is_file() else None for p in paths]
    render_message(msg, files, as_json, events, upload=upload)


@click.command("ack")
@global_options
@click.argument("msg_id", type=MSGID, metavar="MSGID")
@click.option("--person", required=True, help="Who takes the message in hand (name, rank, unit).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def ack_cmd(obj: CliContext, msg_id: str, person: str, as_json: bool) -> None:
    """Acknowledge a received message: a named person takes it in hand.

    Records the decision in the local inbox (final), signs an 'acknowledged' receipt
    naming the person and sends it to the relay for the sender. If the relay cannot be
    reached, the decision and its receipt are kept (exit 0) and the daemon sends the
    receipt as soon as the relay answers; 'notice inbox' shows it until then. MSGID may
    be the first 8 or more characters of the id. The decision is recorded in the local
    audit trail ('notice audit') with the person's name.
    """
    settings = obj.settings()
    msg_id = resolve_id(settings, msg_id, "received")
    identity = obj.identity(settings)
    person = person.strip()
    actor = Actor(person, f"notice ack, login {login_name()}")
    path = existing_inbox(settings)
    d = run(
        lambda: decide(
            settings,
            identity,
            path,
            msg_id,
            "acknowledged",
            person=person,
            clock=obj.clock,
            actor=actor,
        )
    )
    render_decision(d, as_json)


@click.command("reject")
@global_options
@click.argument("msg_id", type=MSGID, metavar="MSGID")
@click.option("--reason", required=True, help="Why the message is rejected (sent to the sender).")
@click.option(
    "--person",
    help="Who rejects it, for the local audit trail only (not sent). Default: the login name.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def reject_cmd(
    obj: CliContext, msg_id: str, reason: str, person: str | None, as_json: bool
) -> None:
    """Reject a received message, with a reason the sender sees.

    Records the decision in the local inbox (final), signs a 'rejected' receipt with the
    reason and sends it to the relay. If the relay cannot be reached, the decision and
    its receipt are kept (exit 0) and the daemon sends the receipt as soon as the relay
    answers. MSGID may be the first 8 or more characters of the id. The decision is
    recorded in the local audit trail ('notice audit') with --person, or the login name.
    """
    login = login_name()
    who = login if person is None else person.strip()
    if not 1 <= len(who) <= MAX_PERSON:
        raise RefusedError(f"the person's name must be 1 to {MAX_PERSON} characters")
    settings = obj.settings()
    msg_id = resolve_id(settings, msg_id, "received")
    identity = obj.identity(settings)
    reason = reason.strip()
    path = existing_inbox(settings)
    actor = Actor(who, f"notice reject, login {login}")
    d = run(
        lambda: decide(
            settings,
            identity,
            path,
            msg_id,
            "rejected",
            reason=reason,
            clock=obj.clock,
            actor=actor,
        )
    )
    render_decision(d, as_json)
