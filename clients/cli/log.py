"""``notice log``: is the relay's log the one this authority saw before?"""

from __future__ import annotations

from collections.abc import Callable

import click

from clients.cli.base import CliContext, run
from clients.cli.render import iso, print_json, stdout_console, text
from clients.client import RelayClient
from clients.config import ClientSettings
from clients.directory import PinnedDirectory
from clients.logwatch import Checked, LogWatch
from keys.identity import Identity

Clock = Callable[[], int]


async def _check(
    settings: ClientSettings, identity: Identity, pinned: PinnedDirectory, clock: Clock
) -> Checked:
    async with RelayClient(
        settings.relay_url, identity, clock=clock, tls_pins=pinned.tls_pins
    ) as client:
        directory = pinned.usable(await pinned.refresh(client), clock())
        return await LogWatch(settings.log_head_path).check(client, directory)


@click.command("log")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def log_cmd(obj: CliContext, as_json: bool) -> None:
    """Check that the relay's log extends the newest head verified here.

    Fetches the relay's signed tree head, verifies its signature against the pinned
    directory and, when it differs from the head kept in the data folder, checks the
    relay's consistency proof between the two. A relay that rewrote its history, or
    shows different histories to different authorities, is refused (exit 1, one line)
    and the kept head is not replaced. The daemon makes the same check at every
    directory refresh.
    """
    settings = obj.settings()
    identity = obj.identity(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pinned = PinnedDirectory.load(settings)
    checked = run(lambda: _check(settings, identity, pinned, obj.clock))
    head, held = checked.head, checked.held
    if as_json:
        print_json(
            {
                "log": head.body.log,
                "size": head.size,
                "root": head.body.root,
                "signed_at": iso(head.body.at),
                "held_size": None if held is None else held.size,
                "consistent": True,
            }
        )
        return
    out = stdout_console()
    out.print(
        text(
            f"relay log of {head.body.log}: {head.size} leaves, root {head.body.root[:16]}…, "
            f"signed {iso(head.body.at)}"
        )
    )
    if held is None:
        out.print(text("first head seen here: kept; later heads must extend it"))
    elif held.size == head.size:
        out.print(text("the same head as the one kept here"))
    else:
        out.print(
            text(f"extends the head kept here ({held.size} leaves): consistency proof verified")
        )
