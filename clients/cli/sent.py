"""``notice status`` and ``notice sent``: what became of the messages this authority sent."""

from __future__ import annotations

import click

from clients.cli.base import MSGID, CliContext, existing_inbox, run
from clients.cli.render import render_sent, render_status
from clients.directory import PinnedDirectory
from clients.refusal import RefusedError
from clients.sender import status_offline, status_online
from clients.store import Inbox, SentMessage


@click.command("status")
@click.argument("msg_id", type=MSGID, metavar="MSGID")
@click.option(
    "--offline",
    is_flag=True,
    help="Show what the local inbox recorded, without asking the relay (no passphrase needed).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status_cmd(obj: CliContext, msg_id: str, offline: bool, as_json: bool) -> None:
    """The receipt timeline of a message this authority sent.

    Fetches the timeline from the relay and verifies every receipt offline against the
    pinned directory: the signer's key, that the signer may make that statement, and that
    it is about this very envelope. Verified receipts are recorded locally. A receipt that
    does not verify is shown as INVALID and the exit status is 1.

    With --offline, shows the receipts recorded locally (verified when they arrived).
    """
    settings = obj.settings()
    if offline:
        path = existing_inbox(settings)
        if path is None:
            raise RefusedError(
                f"no message {msg_id} in the local records ({settings.inbox_path} does not exist)"
            )
        st = run(lambda: status_offline(path, msg_id))
    else:
        identity = obj.identity(settings)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        pinned = PinnedDirectory.load(settings)
        st = run(lambda: status_online(settings, identity, pinned, msg_id, clock=obj.clock))
    render_status(st, as_json)
    if st.invalid:
        raise RefusedError(
            f"{st.invalid} of {len(st.rows)} receipts of message {msg_id} do not verify"
        )


@click.command("sent")
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="At most this many, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def sent_cmd(obj: CliContext, limit: int, as_json: bool) -> None:
    """Messages this authority sent, newest first, with the last status received.

    Reads the local records only; 'notice status MSGID' asks the relay for news.
    """
    settings = obj.settings()
    path = existing_inbox(settings)
    items: list[SentMessage] = []
    if path is not None:

        async def q() -> list[SentMessage]:
            async with await Inbox.open(path) as inbox:
                return list(await inbox.sent.list(limit=limit))

        items = run(q)
    render_sent(items, as_json)
