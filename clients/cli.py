"""``notice``: send signed, end-to-end encrypted notices and work the local inbox.

::

    notice daemon                       receive messages and receipts (runs until SIGTERM)
    notice send --to fr-oclcc ...       seal, upload attachments, send, verify the receipt
    notice status MSGID                 the receipt timeline of a sent message, verified
    notice sent                         messages this authority sent, with their last status
    notice inbox / show MSGID           received messages
    notice ack MSGID --person NAME      take a message in hand (signed receipt to the sender)
    notice reject MSGID --reason TEXT   refuse a message (signed receipt to the sender)

Settings come from the TOML file given by ``--config`` (or ``CPAR_CONFIG``) and
``CPAR_*`` variables (:mod:`clients.config`). Every refusal prints one line on stderr
(``notice: error: ...``) and exits 1; a malformed command line exits 2. Key material is
never printed; message content is shown only by ``show`` and ``inbox`` (to the person
who runs them), never logged.

Blocking work (files, the keystore, argon2id) happens before the event loop starts or
in worker threads, and output is rendered after the loop has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import signal
import sys
import tempfile
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import click
from pydantic import JsonValue, ValidationError
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from clients.client import RelayClient, SubmitResult
from clients.config import ClientSettings, ConfigError, load_client_settings
from clients.errors import ClientError, RelayProblem, TransportError
from clients.inbox import (
    AlreadyDecidedError,
    Inbox,
    InboxError,
    InboxMessage,
    SentMessage,
    StoredReceipt,
    UnknownMessageError,
)
from clients.kinds import (
    HANDLING_CODES,
    KINDS,
    IdentificationNotice,
    InvalidNoticeError,
    Notice,
    describe,
    describe_handling,
    parse_notice,
    summary,
)
from clients.kinds import deadline as notice_deadline
from keys.attachments import encrypt_file
from keys.directory import Directory, DirectoryPin
from keys.encoding import b64d, is_uuid7, now_ms
from keys.envelope import SealedEnvelope, seal
from keys.errors import KeysError
from keys.identity import Identity
from keys.keystore import (
    load_keystore,
    read_keystore_header,
    resolve_passphrase,
    write_private_file,
)
from keys.models import AttachmentManifestEntry, EnvelopeHeader, Priority, ReceiptBody
from keys.receipts import sign_receipt, verify_receipt

__all__ = ["cli", "main", "parse_duration", "parse_time"]

PROG = "notice"
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
Clock = Callable[[], int]
T = TypeVar("T")

log = logging.getLogger("clients.cli")

# --- errors -------------------------------------------------------------------------------


class Refused(click.ClickException):
    """A refusal: one line on stderr, exit 1."""

    exit_code = EXIT_REFUSED


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "failed"


# --- safe text --------------------------------------------------------------------------

_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _clean(text: str) -> str:
    """Text from another authority, made harmless for a terminal.

    Control characters (ANSI escapes included) and bidirectional overrides become
    U+FFFD; newlines and tabs are kept.
    """
    return "".join(
        "\ufffd" if (unicodedata.category(ch) == "Cc" and ch not in "\n\t") or ch in _BIDI else ch
        for ch in text
    )


def _t(text: str | None, style: str = "") -> Text:
    """A rich Text that is never parsed as markup."""
    return Text(_clean(text if text is not None else "—"), style=style)


# --- times and durations ------------------------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_UNIT_MS = (86_400_000, 3_600_000, 60_000, 1000)


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``2h``, ``3d`` (or ``1d12h``) in milliseconds; ValueError otherwise."""
    m = _DURATION.match(text.strip().lower())
    if not text.strip() or m is None or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration; use e.g. 90s, 30m, 2h or 3d")
    ms = sum(int(g) * unit for g, unit in zip(m.groups(), _UNIT_MS, strict=True) if g)
    if ms <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return ms


def parse_time(text: str) -> int:
    """ISO 8601 date-time in epoch milliseconds; a time without a zone is taken as UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 time; use e.g. 2027-01-15T18:00:00+01:00 or "
            "2027-01-15T17:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    if not 0 <= ms < 2**53:
        raise ValueError(f"{text!r} is out of range")
    return ms


class DurationType(click.ParamType[int]):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class TimeType(click.ParamType[int]):
    name = "ISO8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class MessageIdType(click.ParamType[str]):
    name = "MSGID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().lower()
        if not is_uuid7(text):
            self.fail(f"{str(value)[:60]!r} is not a message id (a UUIDv7)", param, ctx)
        return text


DURATION = DurationType()
TIME = TimeType()
MSGID = MessageIdType()


def _when(ms: int | None) -> str:
    """An event time to the second: ``2027-01-15 08:00:03 UTC``."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _cell(ms: int | None) -> str:
    """A time in a table whose header says UTC: ``2027-01-15 08:00:03``."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(ms: int | None) -> str | None:
    """An ISO 8601 UTC time for JSON output."""
    if ms is None:
        return None
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


# --- context ------------------------------------------------------------------------------


@dataclass
class _Ctx:
    clock: Clock
    config: str | None = None
    _settings: ClientSettings | None = field(default=None, repr=False)

    def settings(self) -> ClientSettings:
        if self._settings is None:
            self._settings = load_client_settings(self.config)
        return self._settings

    def identity(self, settings: ClientSettings, *, prompt: bool = True) -> Identity:
        """Open the keystore: file checks first, then the passphrase (file, env, or TTY)."""
        kind, ident = read_keystore_header(settings.keystore)
        if kind != "authority":
            raise Refused(
                f"{settings.keystore} holds a {kind} identity ({ident}), not an authority"
            )
        passphrase = resolve_passphrase(
            env=settings.passphrase_env,
            file=settings.passphrase_file,
            prompt="Keystore passphrase: " if prompt else None,
        )
        return load_keystore(settings.keystore, passphrase)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    async def runner() -> T:
        return await make()

    return asyncio.run(runner())


def _console() -> Console:
    # A terminal uses its own width; piped into a file or a log, keep rows on one line.
    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)


def _err_console() -> Console:
    return Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=True))


def _existing_inbox(settings: ClientSettings) -> Path | None:
    """The inbox database if it exists (read commands never create one)."""
    path = settings.inbox_path
    return path if path.is_file() else None


@contextlib.asynccontextmanager
async def _open_inbox(path: Path) -> Any:
    inbox = await Inbox.open(path)
    try:
        yield inbox
    finally:
        await inbox.close()


def _load_pin(settings: ClientSettings) -> DirectoryPin:
    """The pinned root and every directory version accepted before (blocking I/O)."""
    roots = [settings.root_public_key()]
    path = settings.pin_path
    if path.exists():
        return DirectoryPin.load(roots, path.read_text(encoding="utf-8"))
    return DirectoryPin(roots)


async def _fetch_directory(
    client: RelayClient, settings: ClientSettings, pin: DirectoryPin
) -> Directory:
    """The relay's directory history, accepted through the pin (no rollback, no fork)."""
    tokens = await client.directory_history()

    def accept() -> Directory:
        current = pin.accept_history(tokens)
        write_private_file(settings.pin_path, pin.dump().encode())
        return current

    return await asyncio.to_thread(accept)


# --- the group ----------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config",
    envvar="CPAR_CONFIG",
    show_envvar=True,
    type=click.Path(dir_okay=False),
    help="Client settings (TOML): relay_url, keystore, passphrase_file, root_key, data_dir, ...",
)
@click.pass_obj
def cli(obj: _Ctx, config: str | None) -> None:
    """Cultural Property Alert Relay: notices between competent authorities.

    Send signed, end-to-end encrypted notices through the relay, follow their signed
    receipts, and work the inbox that the daemon fills. Times are shown in UTC. Add
    --json to a listing command for machine-readable output.

    \b
    Typical use:
      notice daemon                                   (as a service)
      notice send --to fr-oclcc --priority urgent --kind identification_notice \\
          --object "Etruscan bronze mirror" --where "Lot 112, online auction" \\
          --sale-deadline 2027-01-15T18:00Z --attach mirror.jpg
      notice status MSGID
      notice inbox
      notice show MSGID
      notice ack MSGID --person "Lt. Rossi"
    """
    obj.config = config


# --- daemon -------------------------------------------------------------------------------


@cli.command("daemon")
@click.pass_obj
def daemon_cmd(obj: _Ctx) -> None:
    """Run the authority's daemon until SIGTERM or SIGINT.

    It keeps one outbound connection to the relay, verifies and decrypts every message
    addressed to this authority, stores it in the local inbox, returns a signed
    'delivered' receipt, downloads attachments, records receipts about messages this
    authority sent, and runs the configured delivery hooks. Logs go to stderr at the
    configured log_level; they never contain message content. The keystore passphrase
    comes from passphrase_file or the variable named by passphrase_env (no prompt).
    """
    from clients.daemon import Daemon

    settings = obj.settings()
    identity = obj.identity(settings, prompt=False)
    _setup_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        try:
            log.info("daemon for %s starting; relay %s", identity.id, settings.relay_url)
            await Daemon(settings, identity, clock=obj.clock).run(stop)
            log.info("daemon for %s stopped", identity.id)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    _run(run)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


# --- send ---------------------------------------------------------------------------------

# option name -> (flag, notice field); the kinds each option applies to
_NOTICE_OPTIONS: dict[str, tuple[str, str]] = {
    "object": ("--object", "object_description"),
    "object_type": ("--object-type", "object_type"),
    "where": ("--where", "identified_where"),
    "identified_at": ("--identified-at", "identified_at"),
    "sale_deadline": ("--sale-deadline", "sale_deadline"),
    "origin": ("--origin", "country_of_origin"),
    "references": ("--reference", "references"),
    "notes": ("--notes", "notes"),
    "text": ("--text", "text"),
    "in_reply_to": ("--in-reply-to", "in_reply_to"),
    "decision": ("--decision", "decision"),
    "regarding": ("--regarding", "regarding"),
    "intended_decision": ("--intended-decision", "intended_decision"),
    "grounds": ("--grounds", "grounds"),
    "reply_by": ("--reply-by", "reply_by"),
    "reference_no": ("--reference-no", "reference"),
    "legal_basis": ("--legal-basis", "legal_basis"),
    "facts": ("--facts", "facts"),
    "measures": ("--measure", "requested_measures"),
    "deadline": ("--deadline", "deadline"),
    "urgency_reason": ("--urgency-reason", "urgency_reason"),
}
_KIND_OPTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # kind -> (allowed options, required options)
    "identification_notice": (
        frozenset(
            {
                "object",
                "object_type",
                "where",
                "identified_at",
                "sale_deadline",
                "origin",
                "references",
                "notes",
            }
        ),
        frozenset({"object", "where"}),
    ),
    "free_text": (frozenset({"text"}), frozenset({"text"})),
    "reply": (frozenset({"in_reply_to", "text", "decision"}), frozenset({"in_reply_to", "text"})),
    "consultation": (
        frozenset({"regarding", "intended_decision", "grounds", "reply_by"}),
        frozenset({"regarding", "intended_decision", "grounds", "reply_by"}),
    ),
    "mla_request": (
        frozenset(
            {"reference_no", "legal_basis", "facts", "measures", "deadline", "urgency_reason"}
        ),
        frozenset({"reference_no", "legal_basis", "facts", "measures"}),
    ),
}
_MAX_ATTACHMENTS = 32


def _given(value: Any) -> bool:
    return value is not None and value != () and value != []


def _notice_from_flags(kind: str | None, opts: Mapping[str, Any], now: int) -> dict[str, Any]:
    given = [name for name in _NOTICE_OPTIONS if _given(opts.get(name))]
    if kind is None:
        if given:
            raise click.UsageError(f"{_NOTICE_OPTIONS[given[0]][0]} needs --kind")
        raise click.UsageError("give the notice: --file FILE, or --kind with its flags")
    if kind == "stolen_property_update":
        raise click.UsageError(
            "--kind stolen_property_update has no flags: write it as JSON and use --file"
        )
    allowed, required = _KIND_OPTIONS[kind]
    for name in given:
        if name not in allowed:
            raise click.UsageError(f"{_NOTICE_OPTIONS[name][0]} does not apply to --kind {kind}")
    for name in _NOTICE_OPTIONS:
        if name in required and not _given(opts.get(name)):
            raise click.UsageError(f"--kind {kind} needs {_NOTICE_OPTIONS[name][0]}")
    content: dict[str, Any] = {"kind": kind}
    for name in given:
        value = opts[name]
        field_name = _NOTICE_OPTIONS[name][1]
        if name == "references":
            value = [{"system": s, "ref": r} for s, r in value]
        elif name == "measures":
            value = list(value)
        elif name == "origin":
            value = str(value).upper()
        content[field_name] = value
    if kind == "identification_notice":
        content.setdefault("identified_at", now)
    return content


def _parse_reference(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> Any:
    out = []
    for value in values:
        system, sep, ref = value.partition(":")
        if not sep or not system.strip() or not ref.strip():
            raise click.BadParameter(
                f"{value[:60]!r} is not SYSTEM:REF (e.g. INTERPOL:2024-1234)", ctx, param
            )
        out.append((system.strip(), ref.strip()))
    return tuple(out)


def _read_notice_file(path: str) -> dict[str, Any]:
    name = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise Refused(f"notice file {name} is not UTF-8 text") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        msg = getattr(exc, "msg", "invalid JSON")
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise Refused(f"notice file {name} is not valid JSON: {msg}{where}") from None
    if not isinstance(raw, dict):
        raise Refused(f"notice file {name} must hold a JSON object with a 'kind'")
    return raw


def _validate_notice(content: Mapping[str, Any], *, from_flags: bool) -> Notice:
    try:
        return parse_notice(content)
    except InvalidNoticeError as exc:
        msg = str(exc)
        if from_flags:
            parts = msg.split(": ", 2)
            if len(parts) == 3:
                top = parts[1].split(".")[0]
                flag = next((f for f, fld in _NOTICE_OPTIONS.values() if fld == top), None)
                if flag is not None:
                    msg = f"{parts[0]}: {parts[1]} ({flag}): {parts[2]}"
        raise Refused(msg) from None


@dataclass(frozen=True)
class _Outgoing:
    to: tuple[str, ...]
    fallback: tuple[str, ...]
    priority: Priority
    ttl_ms: int
    ack_within_ms: int | None
    handling: tuple[str, ...]
    attachments: tuple[Path, ...]
    content: dict[str, JsonValue]
    notice: Notice


@dataclass(frozen=True)
class _SendResult:
    sealed: SealedEnvelope
    relay: str
    accepted_at: int
    receipt: str
    duplicate: bool
    attachments: tuple[AttachmentManifestEntry, ...]


_HANDLING_PATTERN = re.compile(r"^[A-Za-z0-9:_.-]{1,32}$")


@cli.command("send")
@click.option(
    "--to",
    "to",
    multiple=True,
    required=True,
    metavar="ID",
    help="Recipient authority id (repeat for several).",
)
@click.option(
    "--fallback",
    multiple=True,
    metavar="ID",
    help="Fallback recipient, released by the relay only on escalation (repeatable).",
)
@click.option(
    "--priority",
    type=click.Choice(["urgent", "high", "routine"]),
    default="routine",
    show_default=True,
    help="Routing priority.",
)
@click.option(
    "--ack-within",
    type=DURATION,
    help="Acknowledgement is due this long after sending (90s, 30m, 2h, 3d); escalation "
    "starts when it is missed.",
)
@click.option(
    "--expires-in",
    type=DURATION,
    default="7d",
    show_default=True,
    help="The message expires this long after sending.",
)
@click.option(
    "--handling",
    multiple=True,
    metavar="CODE",
    help="Handling code (repeatable): " + ", ".join(HANDLING_CODES) + ".",
)
@click.option(
    "--attach",
    "attach",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, readable=True),
    help="File to attach, encrypted before upload (repeatable, at most 32).",
)
@click.option(
    "--file",
    "notice_file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="The notice as a JSON object with a 'kind' (times in epoch ms); '-' reads stdin. "
    "Replaces --kind and the notice flags.",
)
@click.option(
    "--kind", type=click.Choice(list(KINDS)), help="Kind of notice when built from flags."
)
@click.option("--object", "object", help="[identification_notice] Description of the object.")
@click.option("--object-type", help="[identification_notice] e.g. 'bronze mirror', 'manuscript'.")
@click.option(
    "--where", help="[identification_notice] Where it was identified: auction, URL, lot number."
)
@click.option(
    "--identified-at",
    type=TIME,
    help="[identification_notice] When (ISO 8601, no zone = UTC; default now).",
)
@click.option(
    "--sale-deadline",
    type=TIME,
    help="[identification_notice] When the sale closes (ISO 8601, no zone = UTC).",
)
@click.option(
    "--origin", metavar="CC", help="[identification_notice] Country of origin (ISO 3166)."
)
@click.option(
    "--reference",
    "references",
    multiple=True,
    metavar="SYSTEM:REF",
    callback=_parse_reference,
    help="[identification_notice] Record in another system, e.g. INTERPOL:2024-1234 (repeatable).",
)
@click.option("--notes", help="[identification_notice] Anything else.")
@click.option("--text", help="[free_text, reply] The text.")
@click.option("--in-reply-to", type=MSGID, help="[reply] The message id answered.")
@click.option(
    "--decision",
    type=click.Choice(["granted", "refused", "partial", "information"]),
    help="[reply] The decision on a request or consultation.",
)
@click.option("--regarding", help="[consultation] The request's message id or MLA reference.")
@click.option("--intended-decision", help="[consultation] The decision intended.")
@click.option("--grounds", help="[consultation] The grounds for it.")
@click.option(
    "--reply-by", type=TIME, help="[consultation] Reply due by (ISO 8601, no zone = UTC)."
)
@click.option("--reference-no", help="[mla_request] The request's reference number.")
@click.option("--legal-basis", help="[mla_request] Treaty or law the request rests on.")
@click.option("--facts", help="[mla_request] Summary of the facts.")
@click.option(
    "--measure",
    "measures",
    multiple=True,
    help="[mla_request] A measure requested (repeatable, at least one).",
)
@click.option("--deadline", type=TIME, help="[mla_request] Deadline (ISO 8601, no zone = UTC).")
@click.option("--urgency-reason", help="[mla_request] Why it is urgent.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def send_cmd(obj: _Ctx, /, **opts: Any) -> None:
    """Seal a notice, send it through the relay, and verify the relay's receipt.

    The notice comes from --file (a JSON object whose 'kind' is one of identification_notice,
    mla_request, consultation, stolen_property_update, reply, free_text) or from --kind and
    the flags marked with that kind below. It is validated before anything is sent. Times
    are ISO 8601; a time without a timezone is taken as UTC.

    Steps: fetch the directory and check it against the pinned root (refusing rollback and
    forks), encrypt and upload attachments, sign and encrypt the message for the recipients,
    send it, and verify the signed 'accepted' receipt. Success is reported only for a
    receipt that verifies. The message and receipt are recorded locally for 'notice status'
    and 'notice sent'.

    For an identification_notice built from flags, attached images are listed as its photos.
    """
    now = obj.clock()
    out = _prepare_outgoing(opts, now)
    settings = obj.settings()
    identity = obj.identity(settings)
    if identity.id in (*out.to, *out.fallback):
        raise click.UsageError(f"{identity.id} is this authority: it cannot send to itself")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pin = _load_pin(settings)
    result = _run(lambda: _send(obj, settings, identity, pin, out))
    sealed = result.sealed
    h = sealed.header
    if opts["as_json"]:
        _print_json(
            {
                "id": sealed.id,
                "priority": h.prio,
                "to": list(h.to),
                "fallback": h.fallbacks,
                "created": _iso(h.created),
                "expires": _iso(h.expires),
                "ack_by": _iso(h.ack_by),
                "kind": out.notice.kind,
                "handling": list(out.handling),
                "attachments": [
                    {"name": a.name, "type": a.type, "size": a.size, "sha256": a.h}
                    for a in result.attachments
                ],
                "envelope_hash": sealed.hash,
                "accepted_by": result.relay,
                "accepted_at": _iso(result.accepted_at),
                "receipt": result.receipt,
                "receipt_verified": True,
                "duplicate": result.duplicate,
            }
        )
        return
    con = _console()
    con.print(Text.assemble("Sent ", (sealed.id, "bold"), f"  ({h.prio})"))
    con.print(_t(f"  to:          {', '.join(h.to)}"))
    if h.fallbacks:
        con.print(_t(f"  fallback:    {', '.join(h.fallbacks)}"))
    con.print(_t(f"  notice:      {summary(out.notice)}"))
    if out.handling:
        con.print(_t(f"  handling:    {', '.join(out.handling)}"))
    for a in result.attachments:
        con.print(_t(f"  attachment:  {a.name} ({_size(a.size)}, {a.type})"))
    if h.ack_by is not None:
        con.print(f"  ack by:      {_when(h.ack_by)}")
    con.print(f"  expires:     {_when(h.expires)}")
    again = " (already accepted before)" if result.duplicate else ""
    con.print(
        Text.assemble(
            "accepted by ",
            (result.relay, "bold"),
            f" at {_when(result.accepted_at)}{again}; receipt verified",
        )
    )


def _prepare_outgoing(opts: Mapping[str, Any], now: int) -> _Outgoing:
    """Everything checkable without keys or network, checked (a bad notice costs nothing)."""
    notice_file: str | None = opts["notice_file"]
    if notice_file is not None:
        extra = [n for n in _NOTICE_OPTIONS if _given(opts.get(n))]
        if opts["kind"] is not None or extra:
            flag = "--kind" if opts["kind"] is not None else _NOTICE_OPTIONS[extra[0]][0]
            raise click.UsageError(f"--file cannot be combined with {flag}")
        content = _read_notice_file(notice_file)
        notice = _validate_notice(content, from_flags=False)
    else:
        content = _notice_from_flags(opts["kind"], opts, now)
        notice = _validate_notice(content, from_flags=True)

    attachments = tuple(Path(p) for p in opts["attach"])
    if len(attachments) > _MAX_ATTACHMENTS:
        raise click.UsageError(f"at most {_MAX_ATTACHMENTS} attachments per message")
    names = [p.name for p in attachments]
    for name in names:
        if names.count(name) > 1:
            raise click.UsageError(f"two attachments are named {name!r}; rename one")
        if len(name) > 200:
            raise click.UsageError(
                f"attachment name {name[:40]!r}... is longer than 200 characters"
            )
    if isinstance(notice, IdentificationNotice) and notice_file is None and not notice.photos:
        photos = [p.name for p in attachments if _is_image(p)]
        if photos:
            content["photos"] = photos
            notice = _validate_notice(content, from_flags=True)
    if isinstance(notice, IdentificationNotice):
        missing = [p for p in notice.photos if p not in names]
        if missing:
            raise Refused(
                f"the notice lists photo {missing[0]!r}, which is not attached (--attach)"
            )

    handling = tuple(opts["handling"])
    for code in handling:
        if not _HANDLING_PATTERN.match(code):
            raise click.BadParameter(
                f"{code[:40]!r} is not a handling code (1-32 of A-Z a-z 0-9 : _ . -)",
                param_hint="'--handling'",
            )
    if len(set(handling)) != len(handling):
        raise click.BadParameter("a handling code is given twice", param_hint="'--handling'")
    if len(handling) > 16:
        raise click.BadParameter("at most 16 handling codes", param_hint="'--handling'")
    for code in handling:
        if code not in HANDLING_CODES:
            _err_console().print(
                _t(
                    f"{PROG}: warning: {code} is not a known handling code; recipients "
                    "will treat it as restricted"
                )
            )

    to, fallback = tuple(opts["to"]), tuple(opts["fallback"])
    for flag, values in (("--to", to), ("--fallback", fallback)):
        twice = next((v for v in values if values.count(v) > 1), None)
        if twice is not None:
            raise click.BadParameter(f"{twice} is given twice", param_hint=f"'{flag}'")
    both = sorted(set(to) & set(fallback))
    if both:
        raise click.BadParameter(
            f"{both[0]} is already a recipient (--to)", param_hint="'--fallback'"
        )
    ttl: int = opts["expires_in"]
    ack_within: int | None = opts["ack_within"]
    if ack_within is not None and ack_within > ttl:
        raise click.BadParameter(
            "the acknowledgement cannot be due after the message expires (--expires-in)",
            param_hint="'--ack-within'",
        )
    # Send what was validated, normalised (e.g. "5" -> 5 where a number is meant).
    normal: dict[str, JsonValue] = notice.model_dump(mode="json", exclude_none=True)
    return _Outgoing(
        to=to,
        fallback=fallback,
        priority=cast(Priority, opts["priority"]),  # click.Choice checked it
        ttl_ms=ttl,
        ack_within_ms=ack_within,
        handling=handling,
        attachments=attachments,
        content=normal,
        notice=notice,
    )


def _is_image(path: Path) -> bool:
    import mimetypes

    kind = mimetypes.guess_type(path.name)[0]
    return kind is not None and kind.startswith("image/")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


async def _send(
    obj: _Ctx,
    settings: ClientSettings,
    identity: Identity,
    pin: DirectoryPin,
    out: _Outgoing,
) -> _SendResult:
    async with RelayClient(settings.relay_url, identity, clock=obj.clock) as client:
        directory = await _fetch_directory(client, settings, pin)
        tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="notice-attach-"))
        try:
            entries: list[AttachmentManifestEntry] = []
            for path in out.attachments:
                entry, blob = await asyncio.to_thread(encrypt_file, path, tmp)
                await client.upload_attachment(blob, entry.h)
                await asyncio.to_thread(blob.unlink, True)
                entries.append(entry)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        now = obj.clock()

        def do_seal() -> SealedEnvelope:
            return seal(
                identity,
                directory,
                to=out.to,
                fallback=out.fallback,
                content=out.content,
                now=now,
                priority=out.priority,
                ttl_ms=out.ttl_ms,
                ack_by=None if out.ack_within_ms is None else now + out.ack_within_ms,
                handling=out.handling,
                attachments=entries,
            )

        sealed = await asyncio.to_thread(do_seal)
        try:
            submitted = await _submit(client, sealed.token)
        except TransportError as exc:
            # It may have been committed before the connection broke: remember it, so that
            # 'notice status' can tell, rather than invite a second copy under a new id.
            await _record_sent(settings, sealed, out.notice)
            raise Refused(
                f"message {sealed.id} may not have reached the relay ({exc}); check with "
                f"'notice status {sealed.id}' before sending it again"
            ) from None

    async with _open_inbox(settings.inbox_path) as inbox:
        # The relay holds the message now, whatever its receipt says: remember it.
        await _record_sent(settings, sealed, out.notice, inbox)
        if submitted.id != sealed.id:
            raise Refused(
                f"the relay answered for message {submitted.id[:40]}, not {sealed.id}; "
                "the message is not confirmed"
            )
        try:
            receipt = verify_receipt(
                submitted.receipt,
                directory,
                header=sealed.header,
                envelope_hash=sealed.hash,
                now=obj.clock(),
            )
        except KeysError as exc:
            raise Refused(
                f"message {sealed.id} was sent but the relay's receipt does not verify "
                f"({exc}); it is not confirmed"
            ) from None
        if receipt.status != "accepted":
            raise Refused(
                f"message {sealed.id}: the relay returned a {receipt.status} receipt, "
                "not accepted; it is not confirmed"
            )
        b = receipt.body
        await inbox.record_receipt(sealed.id, receipt.token, status=b.status, signer=b.by, at=b.at)
    return _SendResult(
        sealed=sealed,
        relay=b.by,
        accepted_at=b.at,
        receipt=receipt.token,
        duplicate=submitted.duplicate,
        attachments=tuple(entries),
    )


SUBMIT_RETRY_DELAYS_S = (0.5, 2.0)


async def _submit(client: RelayClient, token: str) -> SubmitResult:
    """Send one envelope; on a broken connection send the same one again (idempotent)."""
    for delay in SUBMIT_RETRY_DELAYS_S:
        try:
            return await client.send(token)
        except TransportError as exc:
            log.info("sending failed (%s); trying again in %.1f s", exc, delay)
            await asyncio.sleep(delay)
    return await client.send(token)


async def _record_sent(
    settings: ClientSettings, sealed: SealedEnvelope, notice: Notice, inbox: Inbox | None = None
) -> None:
    if inbox is None:
        async with _open_inbox(settings.inbox_path) as own:
            await _record_sent(settings, sealed, notice, own)
        return
    await inbox.record_sent(
        sealed.id,
        to=sealed.header.to,
        envelope_hash=sealed.hash,
        created=sealed.header.created,
        priority=sealed.header.prio,
        summary=summary(notice),
    )


# --- status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """One receipt in a timeline, verified (``body``) or not (``error``)."""

    token: str
    body: ReceiptBody | None
    error: str | None


@dataclass(frozen=True)
class _Status:
    id: str
    state: str
    source: str
    to: tuple[str, ...]
    fallback: tuple[str, ...]
    priority: str | None
    created: int | None
    expires: int | None
    ack_by: int | None
    envelope_hash: str | None
    summary: str | None
    rows: tuple[_Row, ...]

    @property
    def invalid(self) -> int:
        return sum(1 for r in self.rows if r.error is not None)


_STATE_AFTER = {
    "delivered": ({"accepted"}, "delivered"),
    "acknowledged": ({"accepted", "delivered"}, "acknowledged"),
    "rejected": ({"accepted", "delivered"}, "rejected"),
    "expired": ({"accepted", "delivered"}, "expired"),
}


def _local_state(statuses: Sequence[str]) -> str:
    """The message state from its receipts, with the relay's rules (docs/API.md)."""
    state = "accepted" if "accepted" in statuses else "sent"
    for status in statuses:
        rule = _STATE_AFTER.get(status)
        if rule is not None and (state in rule[0] or state == "sent"):
            state = rule[1]
    return state


@cli.command("status")
@click.argument("msg_id", type=MSGID, metavar="MSGID")
@click.option(
    "--offline",
    is_flag=True,
    help="Show what the local inbox recorded, without asking the relay (no passphrase needed).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status_cmd(obj: _Ctx, msg_id: str, offline: bool, as_json: bool) -> None:
    """The receipt timeline of a message this authority sent.

    Fetches the timeline from the relay and verifies every receipt offline against the
    pinned directory: the signer's key, that the signer may make that statement, and that
    it is about this very envelope. Verified receipts are recorded locally. A receipt that
    does not verify is shown as INVALID and the exit status is 1.

    With --offline, shows the receipts recorded locally (verified when they arrived).
    """
    settings = obj.settings()
    if offline:
        path = _existing_inbox(settings)
        if path is None:
            raise Refused(
                f"no message {msg_id} in the local records ({settings.inbox_path} does not exist)"
            )
        st = _run(lambda: _status_offline(path, msg_id))
    else:
        identity = obj.identity(settings)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        pin = _load_pin(settings)
        st = _run(lambda: _status_online(obj, settings, identity, pin, msg_id))
    _render_status(st, as_json)
    if st.invalid:
        raise Refused(f"{st.invalid} of {len(st.rows)} receipts of message {msg_id} do not verify")


async def _status_online(
    obj: _Ctx, settings: ClientSettings, identity: Identity, pin: DirectoryPin, msg_id: str
) -> _Status:
    async with RelayClient(settings.relay_url, identity, clock=obj.clock) as client:
        directory = await _fetch_directory(client, settings, pin)
        t = await client.timeline(msg_id)
    try:
        header = EnvelopeHeader.model_validate(t.header)
    except ValidationError as exc:
        raise Refused(f"the relay returned an invalid header for message {msg_id}") from exc
    if header.id != msg_id or header.from_ != identity.id:
        raise Refused(f"the relay returned the timeline of another message than {msg_id}")
    async with _open_inbox(settings.inbox_path) as inbox:
        local = next((s for s in await inbox.sent(limit=1_000_000) if s.id == msg_id), None)
        expected = t.envelope_hash
        if local is not None and local.envelope_hash != t.envelope_hash:
            raise Refused(
                f"the relay's record of message {msg_id} is not the envelope this authority "
                "sent (envelope hash differs)"
            )
        now = obj.clock()

        def verify_all() -> list[_Row]:
            rows = []
            for token in t.receipts:
                if not isinstance(token, str):
                    rows.append(_Row(token="", body=None, error="not a receipt (not a string)"))
                    continue
                try:
                    r = verify_receipt(
                        token, directory, header=header, envelope_hash=expected, now=now
                    )
                    rows.append(_Row(token=r.token, body=r.body, error=None))
                except KeysError as exc:
                    rows.append(_Row(token=str(token), body=None, error=_one_line(str(exc))))
            return rows

        rows = await asyncio.to_thread(verify_all)
        for row in rows:
            if row.body is not None:
                b = row.body
                await inbox.record_receipt(msg_id, row.token, status=b.status, signer=b.by, at=b.at)
    return _Status(
        id=msg_id,
        state=t.state,
        source="relay",
        to=tuple(header.to),
        fallback=tuple(header.fallbacks),
        priority=header.prio,
        created=header.created,
        expires=header.expires,
        ack_by=header.ack_by,
        envelope_hash=expected,
        summary=local.summary if local is not None else None,
        rows=tuple(rows),
    )


def _stored_body(r: StoredReceipt) -> ReceiptBody | None:
    try:
        return ReceiptBody.model_validate_json(b64d(r.token.split(".")[1]))
    except (KeysError, ValidationError, IndexError):
        return None


async def _status_offline(path: Path, msg_id: str) -> _Status:
    async with _open_inbox(path) as inbox:
        local = next((s for s in await inbox.sent(limit=1_000_000) if s.id == msg_id), None)
        stored = await inbox.timeline(msg_id)
    if local is None and not stored:
        raise Refused(f"no message {msg_id} in the local records")
    rows = []
    for r in stored:
        body = _stored_body(r)
        error = None if body else "stored receipt is unreadable"
        # Receipts recorded by the daemon were checked for signature and signer role; check
        # here, with what is known locally, that each is about this very envelope.
        if body is not None and (
            body.msg != msg_id or (local is not None and body.env != local.envelope_hash)
        ):
            error = "receipt is about a different envelope than the one sent"
        rows.append(_Row(r.token, None if error else body, error))
    return _Status(
        id=msg_id,
        state=_local_state([r.status for r in stored]),
        source="local",
        to=local.to if local else (),
        fallback=(),
        priority=local.priority if local else None,
        created=local.created if local else None,
        expires=None,
        ack_by=None,
        envelope_hash=local.envelope_hash if local else None,
        summary=local.summary if local else None,
        rows=tuple(rows),
    )


def _detail(b: ReceiptBody) -> str:
    parts = []
    if b.person:
        parts.append(f"person: {b.person}")
    if b.reason:
        parts.append(f"reason: {b.reason}")
    if b.step is not None:
        parts.append(f"step {b.step}")
    return "; ".join(parts)


def _render_status(st: _Status, as_json: bool) -> None:
    if as_json:
        _print_json(
            {
                "id": st.id,
                "state": st.state,
                "source": st.source,
                "to": list(st.to),
                "fallback": list(st.fallback),
                "priority": st.priority,
                "created": _iso(st.created),
                "expires": _iso(st.expires),
                "ack_by": _iso(st.ack_by),
                "envelope_hash": st.envelope_hash,
                "summary": st.summary,
                "all_verified": st.invalid == 0,
                "receipts": [
                    {
                        "status": r.body.status if r.body else None,
                        "at": _iso(r.body.at) if r.body else None,
                        "by": r.body.by if r.body else None,
                        "person": r.body.person if r.body else None,
                        "reason": r.body.reason if r.body else None,
                        "step": r.body.step if r.body else None,
                        "verified": r.error is None,
                        "error": r.error,
                        "token": r.token,
                    }
                    for r in st.rows
                ],
            }
        )
        return
    con = _console()
    con.print(Text.assemble("Message ", (st.id, "bold"), f"  ({st.priority or '?'})"))
    if st.summary:
        con.print(_t(f"  notice:   {st.summary}"))
    if st.to:
        con.print(_t(f"  to:       {', '.join(st.to)}"))
    if st.fallback:
        con.print(_t(f"  fallback: {', '.join(st.fallback)}"))
    if st.ack_by is not None:
        con.print(f"  ack by:   {_when(st.ack_by)}")
    if st.expires is not None:
        con.print(f"  expires:  {_when(st.expires)}")
    verified = "verified when received" if st.source == "local" else "verified"
    table = Table(title=f"Timeline ({'local records' if st.source == 'local' else 'relay'})")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("signed by", no_wrap=True)
    table.add_column("person / reason / step")
    table.add_column("signature", no_wrap=True)
    for r in st.rows:
        if r.body is None or r.error is not None:
            table.add_row(
                "—",
                Text("INVALID", style="bold red"),
                "—",
                _t(r.error),
                Text("INVALID", style="bold red"),
            )
            continue
        b = r.body
        table.add_row(
            _cell(b.at), b.status, _t(b.by), _t(_detail(b) or "—"), Text(verified, style="green")
        )
    con.print(table)
    style = "bold red" if st.state in {"rejected", "expired"} else "bold"
    con.print(Text.assemble("State: ", (st.state, style)))
    if st.invalid:
        con.print(Text(f"{st.invalid} receipt(s) do NOT verify", style="bold red"))


# --- sent ---------------------------------------------------------------------------------


@cli.command("sent")
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="At most this many, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def sent_cmd(obj: _Ctx, limit: int, as_json: bool) -> None:
    """Messages this authority sent, newest first, with the last status received.

    Reads the local records only; 'notice status MSGID' asks the relay for news.
    """
    settings = obj.settings()
    path = _existing_inbox(settings)
    items: list[SentMessage] = []
    if path is not None:

        async def q() -> list[SentMessage]:
            async with _open_inbox(path) as inbox:
                return list(await inbox.sent(limit=limit))

        items = _run(q)
    if as_json:
        _print_json(
            [
                {
                    "id": s.id,
                    "sent": _iso(s.created),
                    "to": list(s.to),
                    "priority": s.priority,
                    "summary": s.summary,
                    "last_status": s.last_status,
                    "last_status_at": _iso(s.last_status_at),
                }
                for s in items
            ]
        )
        return
    table = Table(title=f"Sent ({len(items)})")
    table.add_column("id", no_wrap=True)
    table.add_column("sent (UTC)", no_wrap=True)
    table.add_column("to")
    table.add_column("priority", no_wrap=True)
    table.add_column("notice")
    table.add_column("last status", no_wrap=True)
    table.add_column("at (UTC)", no_wrap=True)
    for s in items:
        table.add_row(
            s.id,
            _cell(s.created),
            _t(", ".join(s.to)),
            _priority(s.priority),
            _t(s.summary),
            s.last_status or "—",
            _cell(s.last_status_at),
        )
    _console().print(table)


def _priority(prio: str) -> Text:
    return Text(prio, style={"urgent": "bold red", "high": "bold yellow"}.get(prio, ""))


# --- inbox and show -----------------------------------------------------------------------


def _notice_error(msg: InboxMessage) -> str | None:
    try:
        parse_notice(msg.content)
    except InvalidNoticeError as exc:
        return str(exc)
    return None


def _summary_of(msg: InboxMessage) -> str:
    notice = msg.notice
    if notice is None:
        return f"(not a valid notice: kind {msg.kind or '?'})"
    return summary(notice)


def _deadline_of(msg: InboxMessage) -> tuple[str, int | None]:
    notice = msg.notice
    d = notice_deadline(notice) if notice is not None else None
    if d is not None:
        return "", d
    if msg.ack_by is not None and msg.state == "new":
        return "ack by", msg.ack_by
    return "", None


@cli.command("inbox")
@click.option("--all", "show_all", is_flag=True, help="Also acknowledged and rejected messages.")
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="At most this many, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def inbox_cmd(obj: _Ctx, show_all: bool, limit: int, as_json: bool) -> None:
    """Received messages, newest first: those still to acknowledge (all with --all).

    Reads the local inbox that the daemon fills; no passphrase is needed.
    """
    settings = obj.settings()
    path = _existing_inbox(settings)
    items: list[InboxMessage] = []
    if path is not None:

        async def q() -> list[InboxMessage]:
            async with _open_inbox(path) as inbox:
                return list(await inbox.list(limit=limit, state=None if show_all else "new"))

        items = _run(q)
    if as_json:
        out = []
        for m in items:
            label, when = _deadline_of(m)
            out.append(
                {
                    "id": m.id,
                    "received": _iso(m.received_at),
                    "from": m.sender,
                    "role": m.role,
                    "priority": m.priority,
                    "kind": m.kind,
                    "summary": _summary_of(m),
                    "deadline": _iso(notice_deadline(m.notice)) if m.notice else None,
                    "ack_by": _iso(m.ack_by),
                    "handling": list(m.handling),
                    "attachments": len(m.attachments),
                    "state": m.state,
                }
            )
        _print_json(out)
        return
    title = "Inbox" if show_all else "Inbox: to acknowledge"
    table = Table(title=f"{title} ({len(items)})")
    table.add_column("id", no_wrap=True)
    table.add_column("received (UTC)", no_wrap=True)
    table.add_column("from", no_wrap=True)
    table.add_column("priority", no_wrap=True)
    table.add_column("notice")
    table.add_column("deadline (UTC)", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for m in items:
        label, when = _deadline_of(m)
        flags = " [H]" if m.handling else ""
        clip = f" +{len(m.attachments)} att." if m.attachments else ""
        table.add_row(
            m.id,
            _cell(m.received_at),
            _t(m.sender),
            _priority(m.priority),
            _t(_summary_of(m) + clip + flags),
            f"{label} {_cell(when)[:16]}".strip() if when is not None else "—",
            m.state,
        )
    con = _console()
    con.print(table)
    if any(m.handling for m in items):
        con.print(Text("[H]: handling restrictions apply; see 'notice show MSGID'."))


async def _get_message(path: Path | None, msg_id: str) -> tuple[InboxMessage, list[Path]]:
    """The stored message and where the daemon puts each of its attachments."""
    if path is None:
        raise UnknownMessageError(f"no message {msg_id} in the inbox")
    async with _open_inbox(path) as inbox:
        msg = await inbox.get(msg_id)
        if msg is None:
            raise UnknownMessageError(f"no message {msg_id} in the inbox")
        return msg, [inbox.attachment_path(msg.id, a.name) for a in msg.attachments]


@cli.command("show")
@click.argument("msg_id", type=MSGID, metavar="MSGID")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def show_cmd(obj: _Ctx, msg_id: str, as_json: bool) -> None:
    """One received message in full: handling codes first, then the notice and attachments.

    Handling codes travel with the message and bind the recipient (e.g. no onward sharing
    without the originator's consent); an unknown code is to be treated as restricted.
    Attachments show their local path once the daemon has downloaded them.
    """
    settings = obj.settings()
    path = _existing_inbox(settings)
    msg, paths = _run(lambda: _get_message(path, msg_id))
    files = [p if p.is_file() else None for p in paths]
    notice = msg.notice
    handling = describe_handling(msg.handling)
    if as_json:
        _print_json(
            {
                "id": msg.id,
                "from": msg.sender,
                "to": list(msg.to),
                "role": msg.role,
                "priority": msg.priority,
                "created": _iso(msg.created),
                "received": _iso(msg.received_at),
                "expires": _iso(msg.expires),
                "ack_by": _iso(msg.ack_by),
                "state": msg.state,
                "acknowledged_by": msg.acknowledged_by,
                "acknowledged_at": _iso(msg.acknowledged_at),
                "rejected_reason": msg.rejected_reason,
                "decided_at": _iso(msg.decided_at),
                "envelope_hash": msg.envelope_hash,
                "handling": [
                    {"code": c, "known": c in HANDLING_CODES, "meaning": line}
                    for c, line in zip(msg.handling, handling, strict=True)
                ],
                "kind": msg.kind,
                "valid_notice": notice is not None,
                "notice_error": _notice_error(msg),
                "summary": _summary_of(msg),
                "deadline": _iso(notice_deadline(notice)) if notice else None,
                "content": msg.content,
                "attachments": [
                    {
                        "name": a.name,
                        "type": a.type,
                        "size": a.size,
                        "sha256": a.h,
                        "path": str(p) if p else None,
                    }
                    for a, p in zip(msg.attachments, files, strict=True)
                ],
            }
        )
        return
    con = _console()
    if msg.handling:
        con.print(
            Panel(
                _t("\n".join(handling)),
                title="HANDLING RESTRICTIONS",
                title_align="left",
                border_style="bold red",
            )
        )
    else:
        con.print("Handling: no restrictions given")
    meta = Table(show_header=False, box=None, pad_edge=False)
    meta.add_column(style="bold", no_wrap=True)
    meta.add_column()
    meta.add_row("Message", msg.id)
    meta.add_row("From", _t(msg.sender))
    meta.add_row(
        "To",
        _t(
            ", ".join(msg.to) + (" (we are a fallback recipient)" if msg.role == "fallback" else "")
        ),
    )
    meta.add_row("Priority", _priority(msg.priority))
    meta.add_row("Created", _when(msg.created))
    meta.add_row("Received", _when(msg.received_at))
    if msg.ack_by is not None:
        meta.add_row("Ack by", _when(msg.ack_by))
    meta.add_row("Expires", _when(msg.expires))
    state: str = msg.state
    if msg.state == "acknowledged":
        state += f" by {msg.acknowledged_by} at {_when(msg.acknowledged_at)}"
    elif msg.state == "rejected":
        state += f" at {_when(msg.decided_at)}: {msg.rejected_reason}"
    meta.add_row("State", _t(state))
    con.print(meta)
    body = Table(show_header=False, title="Notice", title_justify="left", box=None, pad_edge=False)
    body.add_column(style="bold", no_wrap=True)
    body.add_column()
    if notice is not None:
        for label, value in describe(notice):
            body.add_row(label, _t(value))
    else:
        body.add_row("Invalid", _t(_notice_error(msg) or "not a valid notice"))
        body.add_row("Content", _t(json.dumps(msg.content, indent=2, ensure_ascii=False)))
    con.print(body)
    if msg.attachments:
        att = Table(title="Attachments", title_justify="left")
        att.add_column("name")
        att.add_column("type", no_wrap=True)
        att.add_column("size", no_wrap=True)
        att.add_column("local file")
        for a, p in zip(msg.attachments, files, strict=True):
            att.add_row(
                _t(a.name),
                _t(a.type),
                _size(a.size),
                _t(str(p)) if p else Text("not downloaded yet", style="yellow"),
            )
        con.print(att)


# --- ack / reject -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decision:
    msg: InboxMessage
    status: str
    at: int
    repeat: bool
    new_at_relay: bool


async def _decide(
    obj: _Ctx,
    settings: ClientSettings,
    identity: Identity,
    path: Path | None,
    msg_id: str,
    status: Literal["acknowledged", "rejected"],
    *,
    person: str | None = None,
    reason: str | None = None,
) -> _Decision:
    if path is None:
        raise UnknownMessageError(f"no message {msg_id} in the inbox")
    now = obj.clock()

    def sign(msg: InboxMessage, at: int, person: str | None, reason: str | None) -> str:
        return sign_receipt(
            identity,
            msg_id=msg.id,
            envelope_hash=msg.envelope_hash,
            status=status,
            now=at,
            person=person,
            reason=reason,
        )

    async with _open_inbox(path) as inbox:
        msg = await inbox.get(msg_id)
        if msg is None:
            raise UnknownMessageError(f"no message {msg_id} in the inbox")
        if status == "acknowledged" and person is not None and not 1 <= len(person) <= 200:
            raise Refused("the person's name must be 1 to 200 characters")
        if status == "rejected" and reason is not None and not 1 <= len(reason) <= 500:
            raise Refused("the reason must be 1 to 500 characters")
        # Sign first: a keystore that cannot sign must not leave a decision without receipt.
        token = await asyncio.to_thread(sign, msg, now, person, reason)
        repeat = False
        try:
            if status == "acknowledged":
                assert person is not None
                msg = await inbox.mark_acknowledged(msg_id, person=person, at=now)
            else:
                assert reason is not None
                msg = await inbox.mark_rejected(msg_id, reason=reason, at=now)
        except AlreadyDecidedError:
            msg = await inbox.get(msg_id)
            assert msg is not None
            if msg.state != status:
                raise Refused(
                    f"message {msg_id} was already {msg.state}; the decision is final"
                ) from None
            if status == "acknowledged" and msg.acknowledged_by != person:
                raise Refused(
                    f"message {msg_id} was already acknowledged by {msg.acknowledged_by}; "
                    "the decision is final"
                ) from None
            if status == "rejected" and msg.rejected_reason != reason:
                raise Refused(
                    f"message {msg_id} was already rejected with another reason; "
                    "the decision is final"
                ) from None
            assert msg.decided_at is not None
            # The same statement again (same time): the relay sees a repeat.
            token = await asyncio.to_thread(
                sign, msg, msg.decided_at, msg.acknowledged_by, msg.rejected_reason
            )
            repeat = True
    decided_at = msg.decided_at if msg.decided_at is not None else now
    async with RelayClient(settings.relay_url, identity, clock=obj.clock) as client:
        try:
            new = await client.send_receipt(token)
        except ClientError as exc:
            raise Refused(
                f"message {msg_id} is {status} in the local inbox, but the receipt could not "
                f"be sent: {exc}; run the same command again to re-send it"
            ) from None
    return _Decision(msg=msg, status=status, at=decided_at, repeat=repeat, new_at_relay=new)


def _render_decision(d: _Decision, as_json: bool) -> None:
    m = d.msg
    if as_json:
        _print_json(
            {
                "id": m.id,
                "status": d.status,
                "person": m.acknowledged_by,
                "reason": m.rejected_reason,
                "at": _iso(d.at),
                "receipt_sent": True,
                "repeat": d.repeat,
                "duplicate_at_relay": not d.new_at_relay,
            }
        )
        return
    who = f" by {m.acknowledged_by}" if d.status == "acknowledged" else ""
    why = f" ({m.rejected_reason})" if d.status == "rejected" else ""
    again = " again" if d.repeat else ""
    seen = "" if d.new_at_relay else " (the relay already had it)"
    _console().print(
        _t(
            f"{d.status.capitalize()} {m.id}{who}{why} at {_when(d.at)}; signed receipt sent"
            f"{again} to the relay for {m.sender}{seen}"
        )
    )


@cli.command("ack")
@click.argument("msg_id", type=MSGID, metavar="MSGID")
@click.option("--person", required=True, help="Who takes the message in hand (name, rank, unit).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def ack_cmd(obj: _Ctx, msg_id: str, person: str, as_json: bool) -> None:
    """Acknowledge a received message: a named person takes it in hand.

    Records the decision in the local inbox (final), signs an 'acknowledged' receipt
    naming the person and sends it to the relay for the sender. If sending fails the
    local decision stays; run the same command again to re-send the receipt.
    """
    settings = obj.settings()
    identity = obj.identity(settings)
    person = person.strip()
    path = _existing_inbox(settings)
    d = _run(lambda: _decide(obj, settings, identity, path, msg_id, "acknowledged", person=person))
    _render_decision(d, as_json)


@cli.command("reject")
@click.argument("msg_id", type=MSGID, metavar="MSGID")
@click.option("--reason", required=True, help="Why the message is rejected (sent to the sender).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def reject_cmd(obj: _Ctx, msg_id: str, reason: str, as_json: bool) -> None:
    """Reject a received message, with a reason the sender sees.

    Records the decision in the local inbox (final), signs a 'rejected' receipt with the
    reason and sends it to the relay. If sending fails the local decision stays; run the
    same command again to re-send the receipt.
    """
    settings = obj.settings()
    identity = obj.identity(settings)
    reason = reason.strip()
    path = _existing_inbox(settings)
    d = _run(lambda: _decide(obj, settings, identity, path, msg_id, "rejected", reason=reason))
    _render_decision(d, as_json)


# --- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 refused, 2 usage).

    ``clock`` (epoch milliseconds) is for tests only: it replaces the real clock for
    request signatures, sealing and receipts.
    """
    state = _Ctx(clock=clock or now_ms)
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name=PROG,
            standalone_mode=False,
            obj=state,
        )
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)  # bare "notice": the help, not an error
        return EXIT_USAGE
    except click.exceptions.Abort:
        return _refuse("aborted")
    except click.ClickException as exc:
        return _refuse(exc.format_message(), exc.exit_code)
    except RelayProblem as exc:
        return _refuse(f"the relay refused: {exc.detail} ({exc.code})")
    except (ConfigError, KeysError, ClientError, InboxError, InvalidNoticeError) as exc:
        return _refuse(str(exc))
    except OSError as exc:
        name = f": {exc.filename}" if exc.filename else ""
        return _refuse(f"{exc.strerror or exc}{name}")
    except KeyboardInterrupt:
        return _refuse("interrupted", 130)
    return EXIT_OK


def _refuse(message: str, code: int = EXIT_REFUSED) -> int:
    click.echo(f"{PROG}: error: {_one_line(_clean(message))}", err=True)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
