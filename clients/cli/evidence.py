"""``notice evidence``: write a message's evidence bundle for a court or an authority."""

from __future__ import annotations

import os
from pathlib import Path

import click

from clients.cli.base import MSGID, CliContext, resolve_id, run
from clients.cli.render import iso, print_json, stdout_console, text
from clients.directory import PinnedDirectory
from clients.evidence import export_evidence
from keys.files import open_private


@click.command("evidence")
@click.argument("msg_id", type=MSGID, metavar="MSGID")
@click.option(
    "--out",
    "out_file",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="Where to write the bundle (JSON, 0600; replaced if it exists).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
@click.pass_obj
def evidence_cmd(obj: CliContext, msg_id: str, out_file: str, as_json: bool) -> None:
    """Write the evidence bundle of a message you sent or received.

    The bundle holds the envelope as the relay accepted it, every receipt with its
    place in the relay's log, the log heads and the proof joining them to the newest
    head this authority verified, and the directory versions, so that anyone can check
    it offline with the root key alone:

        keys evidence verify FILE --root-key-file root.pub

    It is verified before it is written. MSGID may be the first 8 or more characters.
    """
    settings = obj.settings()
    identity = obj.identity(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    msg_id = resolve_id(settings, msg_id, "any")
    pinned = PinnedDirectory.load(settings)
    data, proven = run(lambda: export_evidence(settings, identity, pinned, msg_id, clock=obj.clock))
    path = Path(out_file)
    tmp = path.with_name(path.name + ".tmp")
    with open_private(tmp) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    statements = proven.statements()
    if as_json:
        print_json({"file": str(path), "bytes": len(data), **proven.as_json()})
        return
    out = stdout_console()
    out.print(text(f"wrote {path} ({len(data)} bytes): evidence for message {msg_id}"))
    for status, by, at, detail in statements:
        out.print(text(f"  {status:<12} by {by:<16} at {iso(at)} {detail}".rstrip()))
    out.print(text(f"check it with: keys evidence verify {path} --root-key-file ROOT.pub"))
