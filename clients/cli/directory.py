"""``notice directory``: who is in the network, how to reach them, who is reachable now.

Lists every authority of the directory (checked against the pinned root, as for
sending): country, role, contact points, working hours in their own timezone (and
whether their office is open now), and whether the relay can reach its daemon now
(``GET /v1/presence``). When the relay cannot be reached, the pinned directory is shown
with reachability unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import click
from rich.table import Table
from rich.text import Text

from clients.cli.base import CliContext, run
from clients.cli.render import clean, err_console, iso, print_json, stdout_console, text
from clients.client import RelayClient
from clients.config import ClientSettings
from clients.directory import PinnedDirectory, expired_message
from clients.errors import ClientError
from keys import wire
from keys.directory import Directory
from keys.identity import Identity
from keys.models import DirectoryEntry, WorkingHours

__all__ = ["directory_cmd"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class DirectoryView:
    directory: Directory
    presence: dict[str, wire.Presence] | None
    """None: the relay could not be asked."""
    problem: str | None
    now: int
    expired: str | None = None
    """Set when the version is past its expiry plus grace: what is refused and why."""


async def _load(
    settings: ClientSettings, identity: Identity, pinned: PinnedDirectory, now: int
) -> DirectoryView:
    try:
        async with RelayClient(
            settings.relay_url, identity, clock=lambda: now, tls_pins=pinned.tls_pins
        ) as client:
            directory = await pinned.refresh(client)
            answer = await client.presence()
        return DirectoryView(directory, {p.id: p for p in answer.authorities}, None, now)
    except ClientError as exc:
        if pinned.current is None:
            raise
        return DirectoryView(pinned.current, None, str(exc), now)


def _days(days: list[int]) -> str:
    ds = sorted(days)
    if ds == list(range(ds[0], ds[-1] + 1)) and len(ds) > 2:
        return f"{_DAYS[ds[0] - 1]}-{_DAYS[ds[-1] - 1]}"
    return ",".join(_DAYS[d - 1] for d in ds)


def hours_line(hours: WorkingHours | None, now: int) -> tuple[str, bool | None]:
    """``Mon-Fri 08:00-18:00 Europe/Paris (now 09:12 there)`` and whether open now."""
    if hours is None:
        return "not given (escalation runs around the clock)", None
    local = datetime.fromtimestamp(now / 1000, tz=UTC).astimezone(ZoneInfo(hours.tz))
    is_open = hours.is_open(now)
    return (
        f"{_days(hours.days)} {hours.start}-{hours.end} {hours.tz} "
        f"(now {local:%a %H:%M} there: {'open' if is_open else 'closed'})",
        is_open,
    )


def _contacts(e: DirectoryEntry) -> list[str]:
    out = []
    for c in e.contacts:
        parts = [c.name]
        if c.function:
            parts.append(f"({c.function})")
        parts += [x for x in (c.email, c.phone) if x]
        out.append(" ".join(parts))
    return out


def _reach(view: DirectoryView, aid: str) -> tuple[bool | None, int | None]:
    if view.presence is None or aid not in view.presence:
        return None, None
    p = view.presence[aid]
    return p.reachable, p.unreachable_since


def _json(view: DirectoryView) -> dict[str, Any]:
    rows = []
    for e in view.directory.authorities:
        if e.role == "relay":
            continue
        line, is_open = hours_line(e.hours, view.now)
        reachable, since = _reach(view, e.id)
        rows.append(
            {
                "id": e.id,
                "name": e.name,
                "country": e.country,
                "role": e.role,
                "contacts": [c.model_dump(mode="json", exclude_none=True) for c in e.contacts],
                "hours": None if e.hours is None else e.hours.model_dump(mode="json"),
                "hours_text": line,
                "open_now": is_open,
                "reachable": reachable,
                "unreachable_since": iso(since),
                "escalation": e.escalation.model_dump(mode="json", exclude_none=True),
            }
        )
    return {
        "version": view.directory.version,
        "network": view.directory.network,
        "expires": iso(view.directory.expires),
        "expired": view.expired,
        "presence_known": view.presence is not None,
        "authorities": rows,
    }


def render_directory(view: DirectoryView, as_json: bool) -> None:
    if as_json:
        print_json(_json(view))
        return
    d = view.directory
    until = f", expires {iso(d.expires)}" if d.expires is not None else ""
    table = Table(title=f"Directory of {clean(d.network)}, version {d.version}{until}")
    table.add_column("id", no_wrap=True)
    table.add_column("name")
    table.add_column("country", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column("contact points")
    table.add_column("working hours")
    table.add_column("daemon now", no_wrap=True)
    for e in d.authorities:
        if e.role == "relay":
            continue
        line, _ = hours_line(e.hours, view.now)
        reachable, since = _reach(view, e.id)
        if reachable is None:
            reach = Text("unknown", style="yellow")
        elif reachable:
            reach = Text("reachable", style="green")
        else:
            when = "" if since is None else f" since {iso(since)}"
            reach = Text(f"offline{when}", style="bold red")
        table.add_row(
            e.id,
            text(e.name),
            e.country,
            e.role.replace("_", " "),
            text("\n".join(_contacts(e)) or "—"),
            text(line),
            reach,
        )
    stdout_console().print(table)
    if view.expired is not None:
        err_console().print(Text(f"notice: error: {view.expired}", style="bold red"))
    if view.problem is not None:
        err_console().print(
            text(
                f"notice: warning: the relay could not be asked ({view.problem}); "
                "this is the pinned directory, reachability unknown"
            )
        )


@click.command("directory")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def directory_cmd(obj: CliContext, as_json: bool) -> None:
    """The authorities you can send to: country, role, contact points, working hours in
    their timezone, and whether the relay can reach their daemon now.

    The directory is checked against the pinned root key (as for 'notice send'). Without
    the relay, the pinned copy is shown and reachability is unknown.
    """
    settings = obj.settings()
    identity = obj.identity(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pinned = PinnedDirectory.load(settings)
    now = obj.clock()
    view = run(lambda: _load(settings, identity, pinned, now))
    if view.directory.expired(now, pinned.grace_ms):
        view = replace(view, expired=expired_message(view.directory, pinned.grace_ms))
    render_directory(view, as_json)
    if view.expired is not None:
        raise click.exceptions.Exit(1)
