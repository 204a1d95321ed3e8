"""``cpar-demo``: the whole job on one machine, with real keys, processes and sockets.

1. A key ceremony with the real ``keys`` CLI: a network root, an Italian and a French
   cultural-heritage police unit, a French central authority and a relay identity,
   each in an argon2id-encrypted keystore (mode 0600).
2. The directory keeper signs the directory of competent authorities.
3. ``relay serve`` starts on the embedded SQLite store, and one ``notice daemon`` per
   authority connects to it (WebSocket, signed upgrade).
4. The Italian unit sends an urgent identification notice with a photo attachment:
   ``notice send`` (sealed and signed on the sender's machine).
5. The French daemon verifies, decrypts, stores and receipts it; an officer reads it
   (``notice inbox``, ``notice show``) and acknowledges it (``notice ack``).
6. The sender's ``notice status`` shows the signed timeline: accepted, delivered,
   acknowledged, each verified offline.
7. An unacknowledged request escalates: reminded, then released to the fallback.
8. The relay is stopped for maintenance while a notice is sent and a request is
   acknowledged: the notice is queued and the acknowledgement waits in the outbox; the
   relay is started again, and the daemons finish both with no second command.

Nothing needs to be running beforehand; every process is stopped at the end. The
working directory (keystores, configs, logs, inboxes) is kept, and its path printed;
every command is printed as it can be pasted into a shell there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from clients import cli as notice_cli
from keys import cli as keys_cli
from keys.tls import spki_sha256_pem

PASS = "demo passphrase - use a real one in production"  # noqa: S105 - a throwaway demo keystore
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoError(Exception):
    pass


class Demo:
    def __init__(self, workdir: Path, console: Console, *, keep_running: bool = False) -> None:
        self.keep_running = keep_running
        self.dir = workdir
        self.console = console
        self.step_no = 0
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[BinaryIO] = []

    def log(self, name: str) -> BinaryIO:
        fh = (self.dir / f"{name}.log").open("ab")  # a restarted process appends
        self.logs.append(fh)
        return fh

    def command(self, *argv: str, who: str = "") -> None:
        """Print a command as it can be pasted into a shell in the working directory."""
        base = f"{self.dir}{os.sep}"
        shown = [a.removeprefix(base) if a.startswith(base) else a for a in argv]
        # soft_wrap: a long command stays one line, so that it can be pasted as printed.
        self.console.print(Text(f"{who}$ {shlex.join(shown)}", style="dim"), soft_wrap=True)

    def step(self, title: str) -> None:
        self.step_no += 1
        self.console.rule(f"[bold]{self.step_no}. {title}")

    def keys(self, *args: str) -> None:
        argv = ["--passphrase-file", str(self.dir / "passphrase"), *args]
        self.command("keys", *argv)
        code = keys_cli.main(argv)
        if code != 0:
            raise DemoError(f"'keys {shlex.join(args)}' failed with exit code {code}")

    def notice(self, aid: str, *args: str, show: bool = True, quiet: bool = False) -> str:
        """Run ``notice`` as authority ``aid``; returns what it printed."""
        argv = ["--config", str(self.dir / aid / "client.toml"), *args]
        if show:
            self.command("notice", *argv)
        out = StringIO()
        with redirect_stdout(out):
            code = notice_cli.main(argv)
        text = out.getvalue()
        if not quiet:
            sys.stdout.write(text)
        if code != 0:
            raise DemoError(f"'notice {shlex.join(args)}' failed with exit code {code}")
        return text

    # -- the story ---------------------------------------------------------------------

    def run(self) -> None:
        d = self.dir
        (d / "passphrase").write_text(PASS)
        os.chmod(d / "passphrase", 0o600)
        self.console.print(
            Panel(
                "An object that may have been looted from Italy has just surfaced at an online "
                "auction that closes tonight. The Italian unit notifies its French counterpart "
                "through the relay: signed, end-to-end encrypted, with signed receipts back.\n"
                f"Working directory (kept afterwards): {d}\n"
                f"Commands are shown as you can run them there: cd {shlex.quote(str(d))}",
                title="Cultural Property Alert Relay - demo",
            )
        )
        self.ceremony()
        self.start_services()
        try:
            self.story()
            self.consoles()
            if self.keep_running:
                self.console.print(
                    "[bold]The network stays up[/bold] (relay, daemons, consoles) until Ctrl-C."
                )
                with contextlib.suppress(KeyboardInterrupt):
                    while all(p.poll() is None for p in self.procs.values()):
                        time.sleep(0.5)
        finally:
            self.stop_services()
        self.console.print(
            "[bold green]Demo complete.[/bold green] Everything above ran for real on this machine."
        )
        self.console.print(
            Text(
                f"Its files are kept in {d} (keystores, configs, logs in *.log, each "
                f"authority's inbox under <id>/data). Remove them with: rm -r {shlex.quote(str(d))}"
            )
        )

    def ceremony(self) -> None:
        d = self.dir
        self.step("Key ceremony: network root, authorities, relay (argon2id keystores, mode 0600)")
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
            (d / aid).mkdir(exist_ok=True)
            ks = str(d / aid / "authority.ks")
            self.keys("identity", "create", "--id", aid, "--out", ks, "--kdf", "interactive")
            self.keys("identity", "export", "--keystore", ks, "--out", str(d / f"{aid}.pub.json"))
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
        self.keys(
            "tls",
            "create",
            "--relay-id",
            "relay-eu",
            "--host",
            "127.0.0.1",
            "--host",
            "localhost",
            "--key-out",
            str(d / "relay-tls.key"),
            "--cert-out",
            str(d / "relay-tls.pem"),
        )
        pin = spki_sha256_pem((d / "relay-tls.pem").read_bytes())

        self.step("The directory keeper signs the directory of competent authorities")
        lines = [
            'network = "cpar-demo"',
            "",
            "[[authorities]]",
            'id = "relay-eu"',
            'name = "Demo relay"',
            'country = "BE"',
            'role = "relay"',
            'keys = "relay-eu.pub.json"',
            f'tls_spki_sha256 = ["{pin}"]  # daemons accept only this TLS key',
            "",
        ]
        for aid, name, country, role in AUTHORITIES:
            lines += [
                "[[authorities]]",
                f'id = "{aid}"',
                f'name = "{name}"',
                f'country = "{country}"',
                f'role = "{role}"',
                f'keys = "{aid}.pub.json"',
                'contacts = [{ name = "Duty officer", function = "24/7 line", phone = "+00 000 000" }]',
            ]
            if aid == "fr-ocbc":
                lines.append(
                    'hours = { tz = "Europe/Paris", days = [1, 2, 3, 4, 5], start = "08:00", end = "19:00" }'
                )
                lines.append('escalation = { supervisor = "fr-central" }')
            lines.append("")
        (d / "entries.toml").write_text("\n".join(lines), encoding="utf-8")
        (d / "directory").mkdir(exist_ok=True)
        self.keys(
            "directory",
            "build",
            "--root-keystore",
            str(d / "root.ks"),
            "--entries",
            str(d / "entries.toml"),
            "--out",
            str(d / "directory" / "v0001.jws"),
        )
        self.keys(
            "directory",
            "verify",
            str(d / "directory" / "v0001.jws"),
            "--root-key-file",
            str(d / "root.pub"),
        )

    def start_services(self) -> None:
        d = self.dir
        port = _free_port()
        root_key = (d / "root.pub").read_text().strip()
        (d / "relay.toml").write_text(
            f'port = {port}\ndata_dir = "relay-data"\ndirectory_dir = "directory"\nroot_key = "{root_key}"\n'
            'keystore = "relay.ks"\nkeystore_passphrase_file = "passphrase"\nlog_level = "WARNING"\n'
            'tls_cert_file = "relay-tls.pem"\ntls_key_file = "relay-tls.key"\n'
            "# Demo only: escalation in seconds instead of minutes and hours.\n"
            '[policies.urgent]\nremind_after = "3s"\nrelease_after = "6s"\nnotify_after = "1h"\n'
            '[policies.high]\nremind_after = "2h"\nrelease_after = "8h"\nnotify_after = "1d"\n'
            '[policies.routine]\nremind_after = "2d"\nrelease_after = "5d"\nnotify_after = "10d"\n'
        )
        for aid, *_ in AUTHORITIES:
            (d / aid / "client.toml").write_text(
                f'relay_url = "https://127.0.0.1:{port}"\nkeystore = "authority.ks"\n'
                f'passphrase_file = "../passphrase"\nroot_key = "{root_key}"\ndata_dir = "data"\n'
                f'log_level = "WARNING"\nconsole_port = {_free_port()}\n'
                # Demo only: the one-time link signs this officer in when opened.
                f'console_link_person = "Demo officer, {aid}"\n'
            )
        self.step("Start the relay (embedded SQLite store) and one daemon per authority")
        self.start_relay()
        for aid, *_ in AUTHORITIES:
            argv = ["--config", str(d / aid / "client.toml"), "daemon"]
            self.command("notice", *argv, who=aid)
            self.procs[aid] = subprocess.Popen(
                [sys.executable, "-m", "clients.cli", *argv],
                stdout=subprocess.DEVNULL,
                stderr=self.log(aid),
            )

    def start_relay(self) -> None:
        d = self.dir
        argv = ["serve", "--config", str(d / "relay.toml")]
        self.command("relay", *argv)
        relay = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=self.log("relay"),
        )
        self.procs["relay"] = relay
        assert relay.stdout is not None
        line = relay.stdout.readline().decode().strip()
        if "listening" not in line:
            raise DemoError(f"the relay did not start (see {d / 'relay.log'})")
        self.console.print(line)

    def stop_relay(self) -> None:
        proc = self.procs.pop("relay")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()
        self.console.print(f"relay stopped for maintenance (exit {proc.returncode})")

    def story(self) -> None:
        d = self.dir
        self.step("it-tpc sends an urgent identification notice with a photo")
        photo = d / "mirror.png"
        photo.write_bytes(_png())
        sent = self.notice(
            "it-tpc",
            "send",
            "--json",
            "--to",
            "fr-ocbc",
            "--priority",
            "urgent",
            "--ack-within",
            "30m",
            "--handling",
            "no-onward-sharing",
            "--attach",
            str(photo),
            "--kind",
            "identification_notice",
            "--object",
            "Etruscan bronze mirror with engraved Lasa figure, 3rd century BC",
            "--object-type",
            "bronze mirror",
            "--where",
            "Online auction, lot 112",
            "--sale-deadline",
            time.strftime("%Y-%m-%dT23:00:00Z", time.gmtime()),
            "--origin",
            "IT",
            "--reference",
            "Leonardo:2019-3345",
            quiet=True,
        )
        msg_id = json.loads(sent)["id"]
        self.console.print(
            f"message [bold]{msg_id}[/bold] accepted by the relay; its signed receipt verified"
        )
        self.console.print(
            "[dim]the relay sees only: from, to, priority, deadlines, wrapped keys, attachment hash[/dim]"
        )

        self.step(
            "fr-ocbc's daemon verifies, decrypts, stores and sends a signed 'delivered' receipt"
        )
        self._wait(
            lambda: self._state("it-tpc", msg_id) in {"delivered", "acknowledged"}, "delivery"
        )
        self.notice("fr-ocbc", "inbox")
        self.notice("fr-ocbc", "show", msg_id)

        self.step("A duty officer at fr-ocbc takes it in hand")
        self.notice("fr-ocbc", "ack", msg_id, "--person", "Capt. Martin (duty officer)")

        self.step("it-tpc follows the signed receipt timeline (each receipt verified offline)")
        self._wait(lambda: self._state("it-tpc", msg_id) == "acknowledged", "acknowledgement")
        self.notice("it-tpc", "status", msg_id)

        self.step("Evidence for a court: a bundle anyone can check with the root key alone")
        bundle = self.dir / "it-tpc" / f"evidence-{msg_id[:8]}.json"
        self.notice("it-tpc", "evidence", msg_id, "--out", str(bundle))
        self.keys("evidence", "verify", str(bundle), "--root-key-file", str(self.dir / "root.pub"))

        self.step(
            "An unacknowledged request escalates (demo policy: remind at 3 s, release at 6 s)"
        )
        sent = self.notice(
            "it-tpc",
            "send",
            "--json",
            "--to",
            "fr-central",
            "--fallback",
            "fr-ocbc",
            "--priority",
            "urgent",
            "--kind",
            "mla_request",
            "--reference-no",
            "IT-MLA-2026-117",
            "--legal-basis",
            "UNTOC art. 18; 1970 UNESCO Convention",
            "--facts",
            "Seizure requested before the auction closes tonight.",
            "--measure",
            "Seize lot 112 pending restitution proceedings",
            quiet=True,
        )
        mla_id = json.loads(sent)["id"]
        self.console.print(
            f"request [bold]{mla_id}[/bold] sent to fr-central, with fr-ocbc as fallback; nobody acknowledges it"
        )
        self._wait(lambda: self._escalated("it-tpc", mla_id) >= 2, "escalation", limit_s=30)
        self.notice("it-tpc", "status", mla_id)
        self.console.print("fr-ocbc, the fallback, now has the request in its inbox:")
        self.notice("fr-ocbc", "inbox")
        self.outage(mla_id)

    def outage(self, mla_id: str) -> None:
        """The relay restarted while a notice is queued and an acknowledgement pending."""
        self.step("The relay goes down for maintenance; people keep working")
        self.stop_relay()
        self.console.print("it-tpc sends a follow-up; the relay cannot take it, so it is queued:")
        sent = self.notice(
            "it-tpc",
            "send",
            "--to",
            "fr-ocbc",
            "--priority",
            "high",
            "--kind",
            "free_text",
            "--text",
            "Photos of lot 113 attached to the auction page; same consignor.",
        )
        queued_id = sent.split()[1]
        self.console.print("fr-ocbc takes the released request in hand; its receipt waits:")
        self.notice("fr-ocbc", "ack", mla_id, "--person", "Lt. Girard (duty desk)")
        self.notice("fr-ocbc", "inbox")
        self.notice("it-tpc", "sent")

        self.step("The relay is back: the daemons finish the job, no second command")
        self.start_relay()
        # What it-tpc's daemon recorded: the relay's receipts, pushed to it as they come.
        self._wait(lambda: self._sent_state("it-tpc", queued_id) == "delivered", "the notice")
        self._wait(lambda: self._sent_state("it-tpc", mla_id) == "acknowledged", "the ack")
        self.notice("it-tpc", "sent")
        self.notice("it-tpc", "status", mla_id[:13])

    def _escalated(self, aid: str, msg_id: str) -> int:
        out = self.notice(aid, "status", msg_id, "--json", show=False, quiet=True)
        return sum(1 for r in json.loads(out).get("receipts", []) if r.get("status") == "escalated")

    def _sent_state(self, aid: str, msg_id: str) -> str:
        out = self.notice(aid, "sent", "--json", show=False, quiet=True)
        return next((str(m["state"]) for m in json.loads(out) if m["id"] == msg_id), "?")

    def _state(self, aid: str, msg_id: str) -> str:
        out = self.notice(aid, "status", msg_id, "--json", show=False, quiet=True)
        return str(json.loads(out).get("state"))

    def _wait(self, check: object, what: str, limit_s: float = 30.0) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if check():  # type: ignore[operator]
                return
            time.sleep(0.2)
        raise DemoError(f"timed out waiting for {what} (logs in {self.dir})")

    def consoles(self) -> None:
        """Each authority's officer console, served by its daemon: a one-time link each."""
        self.step("Officer consoles: each daemon serves one on loopback (one-time sign-in links)")
        for aid, *_ in AUTHORITIES:
            link = self.dir / aid / "data" / "console-link"
            self._wait(link.exists, f"{aid}'s console", limit_s=15)
            self.console.print(Text(f"{aid}: {link.read_text().strip()}"))
        self.console.print(
            "Open a link in a browser on this machine: it signs in that authority's demo "
            "officer (recorded with every decision and in the audit trail). Each link works "
            "once; the daemon writes a new one to <id>/data/console-link."
            + ("" if self.keep_running else " (cpar-demo --keep-running keeps them up.)")
        )

    def stop_services(self) -> None:
        self.step("Stop the daemons and the relay (SIGTERM: graceful)")
        for name, proc in reversed(list(self.procs.items())):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            self.console.print(f"{name} stopped (exit {proc.returncode})")
        self.procs.clear()
        for fh in self.logs:
            fh.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cpar-demo",
        description="Run the whole job end to end on this machine: key ceremony, signed "
        "directory, the relay and three daemons, an urgent notice with a photo, delivery, "
        "acknowledgement, and the verified receipt timeline.",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="put the demo's files here (default: a new cpar-demo-* folder in the system's "
        "temporary directory); they are kept afterwards",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after the story, leave the relay, the daemons and their consoles up until "
        "Ctrl-C, so a person can try the consoles",
    )
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    if args.workdir:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="cpar-demo-")).resolve()
    try:
        Demo(workdir, console, keep_running=args.keep_running).run()
    except DemoError as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
