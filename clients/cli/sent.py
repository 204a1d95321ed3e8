"""``notice status``, ``notice sent`` and ``notice watch``: what became of the messages
this authority sent."""

from __future__ import annotations

import asyncio
import json

import click

from clients.cli.base import MSGID, CliContext, existing_inbox, global_options, resolve_id, run
from clients.cli.render_sent import receipt_event, render_sent, render_status
from clients.directory import PinnedDirectory
from clients.errors import NotFoundError, TransportError, UnavailableError
from clients.refusal import RefusedError
from clients.sender import status_offline, status_online
from clients.store import Inbox, SentMessage
from keys.lifecycle import CLOSED


@click.command("status")
@global_options
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

    With --offline, shows the receipts recorded locally (verified when they arrived). A
    message still in the local outbox (queued: the daemon submits it) is shown from the
    local records. MSGID may be the first 8 or more characters of the id.
    """
    settings = obj.settings()
    msg_id = resolve_id(settings, msg_id, "sent")
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
        try:
            st = run(lambda: status_online(settings, identity, pinned, msg_id, clock=obj.clock))
        except NotFoundError as missing:
            # Not at the relay: perhaps still in the outbox (or expired there).
            local = existing_inbox(settings)
            if local is None:
                raise
            try:
                st = run(lambda: status_offline(local, msg_id))
            except RefusedError:
                raise missing from None
            if st.state not in ("queued", "expired", "failed"):
                raise
    render_status(st, as_json)
    if st.invalid:
        raise RefusedError(
            f"{st.invalid} of {len(st.rows)} receipts of message {msg_id} do not verify"
        )


@click.command("sent")
@global_options
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


@click.command("watch")
@global_options
@click.argument("msg_id", type=MSGID, metavar="MSGID")
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 300),
    default=2.0,
    show_default=True,
    help="Seconds between two looks at the relay's timeline.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, per event.")
@click.pass_obj
def watch_cmd(obj: CliContext, msg_id: str, interval: float, as_json: bool) -> None:
    """Follow a message this authority sent, live, until it is acknowledged, rejected or
    expired (then exit 0).

    Prints each receipt as it arrives on the relay's timeline, verified offline against
    the pinned directory like 'notice status'. A message still in the local outbox is
    shown as queued until the daemon submits it. Ctrl-C stops watching (exit 130).
    """
    settings = obj.settings()
    msg_id = resolve_id(settings, msg_id, "sent")
    identity = obj.identity(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pinned = PinnedDirectory.load(settings)
    seen: set[str] = set()
    said: set[str] = set()

    def emit(event: dict[str, object], line: str) -> None:
        click.echo(json.dumps(event, ensure_ascii=True) if as_json else line)

    def once(key: str, event: dict[str, object], line: str) -> None:
        if key not in said:
            said.add(key)
            emit(event, line)

    path = existing_inbox(settings)

    async def outbox_state() -> str | None:
        if path is None:
            return None
        async with await Inbox.open(path) as inbox:
            entry = await inbox.outbox.get(msg_id)
        return None if entry is None else entry.state

    async def watch() -> str:
        while True:
            local = await outbox_state()
            if local in ("expired", "failed"):
                emit({"event": "end", "id": msg_id, "state": local}, f"{local} in the outbox")
                return local
            if local == "queued":
                once("queued", {"event": "queued", "id": msg_id}, "queued in the local outbox")
            try:
                st = await status_online(settings, identity, pinned, msg_id, clock=obj.clock)
            except NotFoundError:
                if local is None:
                    raise
            except (TransportError, UnavailableError) as exc:
                once(
                    "down",
                    {"event": "relay_unreachable", "detail": str(exc)},
                    f"the relay cannot be reached ({exc}); still watching",
                )
            else:
                said.discard("down")
                for row in st.rows:
                    if row.token not in seen:
                        seen.add(row.token)
                        event, line = receipt_event(row)
                        emit(event, line)
                if st.state in CLOSED:
                    emit({"event": "end", "id": msg_id, "state": st.state}, f"State: {st.state}")
                    return st.state
            await asyncio.sleep(interval)

    try:
        state = run(watch)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None
    if state == "failed":
        raise RefusedError(f"message {msg_id} was refused by the relay; see 'notice sent'")
