"""``cpar-demo``: walk through the trust layer with real keys, start to finish.

What it does, on the local disk only (nothing needs to be running):

1. a key ceremony with the real ``keys`` CLI: a network root, three authorities
   (Italian and French cultural-heritage police units and a French central authority)
   and a relay identity, each in an argon2id-encrypted keystore with mode 0600;
2. the directory keeper signs a directory and a client pins and verifies it;
3. the Italian unit seals an urgent identification notice with a photo attachment;
4. the French unit opens it, decrypts the photo, and signs ``delivered`` and
   ``acknowledged`` receipts; the relay's ``accepted`` receipt is signed too;
5. the sender verifies the whole timeline offline, and a tampered copy is refused.

The relay issue replaces steps 3-5 with the real relay and daemons over the network.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import JsonValue
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from keys import cli as keys_cli
from keys.attachments import decrypt_file, encrypt_file
from keys.directory import DirectoryPin
from keys.encoding import b64d, now_ms
from keys.envelope import open_envelope, seal
from keys.errors import KeysError
from keys.keystore import load_keystore
from keys.receipts import Receipt, sign_receipt, verify_receipt

PASS_ENV = "CPAR_DEMO_PASSPHRASE"  # noqa: S105 - a variable name
AUTHORITIES = [
    ("it-tpc", "Carabinieri TPC (Comando Tutela Patrimonio Culturale)", "IT", "national_body"),
    (
        "fr-ocbc",
        "Office central de lutte contre le trafic des biens culturels",
        "FR",
        "national_body",
    ),
    (
        "fr-central",
        "French central authority for mutual legal assistance",
        "FR",
        "central_authority",
    ),
]


def _png(width: int = 48, height: int = 32) -> bytes:
    """A small real PNG (a bronze-coloured gradient) standing in for an object photo."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((150 + x, 100 + y, 40)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class Demo:
    def __init__(self, workdir: Path, console: Console) -> None:
        self.dir = workdir
        self.console = console
        self.step_no = 0

    def step(self, title: str) -> None:
        self.step_no += 1
        self.console.rule(f"[bold]{self.step_no}. {title}")

    def keys(self, *args: str) -> None:
        argv = ["--passphrase-env", PASS_ENV, *args]
        self.console.print(f"[dim]$ keys {' '.join(args)}[/dim]")
        code = keys_cli.main(argv)
        if code != 0:
            raise SystemExit(f"demo: 'keys {' '.join(args)}' failed with exit code {code}")

    def run(self) -> None:
        d = self.dir
        os.environ.setdefault(PASS_ENV, "demo passphrase - use a real one in production")
        self.console.print(
            Panel(
                "A notice that an object possibly looted from Italy has surfaced at an online "
                "auction closing tonight travels, signed and end-to-end encrypted, to the French "
                "unit, and signed receipts come back.\n"
                f"Working directory: {d}",
                title="Cultural Property Alert Relay - trust layer demo",
            )
        )

        self.step(
            "Key ceremony: network root, authorities and relay (keystores are argon2id, 0600)"
        )
        self.keys(
            "root",
            "create",
            "--out",
            str(d / "root.ks"),
            "--pub-out",
            str(d / "root.pub"),
            "--kdf",
            "interactive",
        )
        for aid, *_ in AUTHORITIES:
            self.keys(
                "identity",
                "create",
                "--id",
                aid,
                "--out",
                str(d / f"{aid}.ks"),
                "--kdf",
                "interactive",
            )
            self.keys(
                "identity",
                "export",
                "--keystore",
                str(d / f"{aid}.ks"),
                "--out",
                str(d / f"{aid}.pub.json"),
            )
        self.keys(
            "identity",
            "create",
            "--id",
            "relay-eu",
            "--kind",
            "relay",
            "--out",
            str(d / "relay.ks"),
            "--kdf",
            "interactive",
        )
        self.keys(
            "identity",
            "export",
            "--keystore",
            str(d / "relay.ks"),
            "--out",
            str(d / "relay-eu.pub.json"),
        )

        self.step("The directory keeper signs the directory of competent authorities")
        entries = ['network = "cpar-demo"', ""]
        entries += [
            "[[authorities]]",
            'id = "relay-eu"',
            'name = "Demo relay"',
            'country = "BE"',
            'role = "relay"',
            'keys = "relay-eu.pub.json"',
            "",
        ]
        for aid, name, country, role in AUTHORITIES:
            entries += [
                "[[authorities]]",
                f'id = "{aid}"',
                f'name = "{name}"',
                f'country = "{country}"',
                f'role = "{role}"',
                f'keys = "{aid}.pub.json"',
                'contacts = [{ name = "Duty officer", function = "24/7 line", phone = "+00 000 000" }]',
            ]
            if aid == "fr-ocbc":
                entries.append(
                    'hours = { tz = "Europe/Paris", days = [1, 2, 3, 4, 5], start = "08:00", end = "19:00" }'
                )
                entries.append('escalation = { supervisor = "fr-central" }')
            entries.append("")
        (d / "entries.toml").write_text("\n".join(entries), encoding="utf-8")
        self.keys(
            "directory",
            "build",
            "--root-keystore",
            str(d / "root.ks"),
            "--entries",
            str(d / "entries.toml"),
            "--out",
            str(d / "directory-v1.jws"),
        )
        self.keys(
            "directory",
            "verify",
            str(d / "directory-v1.jws"),
            "--root-key-file",
            str(d / "root.pub"),
            "--pin",
            str(d / "pin.json"),
        )

        passphrase = os.environ[PASS_ENV]
        pin = DirectoryPin([b64d((d / "root.pub").read_text().strip())])
        directory = pin.accept((d / "directory-v1.jws").read_text().strip())
        sender = load_keystore(d / "it-tpc.ks", passphrase)
        recipient = load_keystore(d / "fr-ocbc.ks", passphrase)
        relay = load_keystore(d / "relay.ks", passphrase)

        self.step("it-tpc seals an urgent identification notice with a photo")
        photo = d / "mirror.png"
        photo.write_bytes(_png())
        entry, blob = encrypt_file(photo, d / "attachments")
        now = now_ms()
        notice: dict[str, JsonValue] = {
            "kind": "identification_notice",
            "object": "Etruscan bronze mirror with engraved Lasa figure, 3rd century BC",
            "where": "Online auction, lot 112",
            "sale_deadline": "tonight 19:00 CET",
            "references": ["Leonardo database record 2019/3345"],
        }
        sealed = seal(
            sender,
            directory,
            to=["fr-ocbc"],
            content=notice,
            now=now,
            priority="urgent",
            ack_by=now + 30 * 60_000,
            handling=["no-onward-sharing"],
            attachments=[entry],
        )
        self.console.print(
            f"message {sealed.id}: {len(sealed.token)} bytes, envelope hash {sealed.hash[:16]}…"
        )
        self.console.print(
            f"photo encrypted with secretstream: {entry.n} bytes stored as {blob.name[:16]}…"
        )
        self.console.print(
            "[dim]the relay sees only: from, to, priority, deadlines, wrapped keys, attachment hash[/dim]"
        )

        timeline: list[Receipt] = []
        accepted = sign_receipt(
            relay, msg_id=sealed.id, envelope_hash=sealed.hash, status="accepted", now=now + 3
        )
        timeline.append(
            verify_receipt(accepted, directory, header=sealed.header, envelope_hash=sealed.hash)
        )

        self.step("fr-ocbc verifies, decrypts, stores, and receipts")
        opened = open_envelope(sealed.token, directory, recipient, now=now + 40)
        self.console.print(f"verified sender {opened.sender.id} ({opened.sender.name})")
        handling = escape(f"[handling: {', '.join(opened.plaintext.handling)}]")
        self.console.print(f"notice: {opened.content['object']}  {handling}")
        out = decrypt_file(blob, opened.plaintext.attachments[0], d / "received-mirror.png")
        same = out.read_bytes() == photo.read_bytes()
        self.console.print(
            f"photo decrypted to {out.name}: {'identical to the original' if same else 'MISMATCH'}"
        )
        delivered = sign_receipt(
            recipient, msg_id=sealed.id, envelope_hash=opened.hash, status="delivered", now=now + 45
        )
        acked = sign_receipt(
            recipient,
            msg_id=sealed.id,
            envelope_hash=opened.hash,
            status="acknowledged",
            now=now + 4 * 60_000,
            person="Capt. Martin (duty officer)",  # 4 minutes later
        )

        self.step("it-tpc verifies the receipt timeline offline")
        for token in (delivered, acked):
            timeline.append(
                verify_receipt(token, directory, header=sealed.header, envelope_hash=sealed.hash)
            )
        table = Table(title=f"Timeline of {sealed.id}")
        for col in ("time (UTC)", "status", "signed by", "detail"):
            table.add_column(col)
        for r in timeline:
            at = datetime.fromtimestamp(r.body.at / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
            table.add_row(at, r.status, r.signer.id, r.body.person or r.body.reason or "")
        self.console.print(table)

        self.step("A tampered copy is refused")
        head, payload, sig = sealed.token.split(".")
        forged = f"{head}.{payload[:-4]}AAAA.{sig}"
        try:
            open_envelope(forged, directory, recipient, now=now + 50)
        except KeysError as exc:
            self.console.print(f"[green]refused[/green] ({type(exc).__name__}): {exc}")
        else:  # pragma: no cover - would be a security bug
            raise SystemExit("demo: a tampered envelope was accepted")
        self.console.print("[bold green]Demo complete.[/bold green]")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cpar-demo",
        description="Run the trust-layer demo: key ceremony, signed directory, an urgent "
        "notice sealed and opened with a photo, and a verified receipt timeline.",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the demo's files here (default: a temporary directory)"
    )
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        Demo(args.workdir, console).run()
    else:
        with tempfile.TemporaryDirectory(prefix="cpar-demo-") as tmp:
            Demo(Path(tmp), console).run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
