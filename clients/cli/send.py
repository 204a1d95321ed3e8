"""``notice send``: build a notice from flags or a JSON file, check it, and send it.

Everything checkable without keys or the network is checked here first (a bad notice
costs nothing); the sending itself is :func:`clients.sender.send`.
"""

from __future__ import annotations

import json
import mimetypes
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import click
from pydantic import JsonValue

from clients.cli.base import (
    DURATION,
    MSGID,
    PROG,
    TIME,
    CliContext,
    UsageRefused,
    global_options,
    resolve_id,
    run,
)
from clients.cli.render import err_console, render_send, text
from clients.directory import PinnedDirectory
from clients.kinds import (
    HANDLING_CODES,
    KINDS,
    IdentificationNotice,
    InvalidNoticeError,
    Notice,
    parse_notice,
)
from clients.sender import Outgoing, send
from keys.encoding import is_uuid7
from keys.models import Priority

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
        raise UsageRefused(f"notice file {name} is not UTF-8 text") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        msg = getattr(exc, "msg", "invalid JSON")
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise UsageRefused(f"notice file {name} is not valid JSON: {msg}{where}") from None
    if not isinstance(raw, dict):
        raise UsageRefused(f"notice file {name} must hold a JSON object with a 'kind'")
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
        raise UsageRefused(msg) from None


_HANDLING_PATTERN = re.compile(r"^[A-Za-z0-9:_.-]{1,32}$")


@click.command("send")
@global_options
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
@click.option(
    "--in-reply-to",
    type=MSGID,
    help="[reply] The message id answered (or its first 8 or more characters).",
)
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
@click.option(
    "--no-queue",
    "no_queue",
    is_flag=True,
    help="Fail if the relay cannot take the message now, instead of queueing it for the daemon.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def send_cmd(obj: CliContext, /, **opts: Any) -> None:
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

    If the relay cannot be reached (or answers 503), the message is sealed with the
    locally pinned directory and QUEUED in the local outbox (exit 0; --json gives
    "state": "queued"): the daemon submits it as soon as the relay answers, under the same
    message id. --no-queue fails instead. A message the relay refuses is never queued.

    For an identification_notice built from flags, attached images are listed as its photos.
    """
    now = obj.clock()
    if opts["in_reply_to"] is not None and not is_uuid7(opts["in_reply_to"]):
        opts["in_reply_to"] = resolve_id(obj.settings(), opts["in_reply_to"], "any")
    out = _prepare_outgoing(opts, now)
    settings = obj.settings()
    identity = obj.identity(settings)
    if identity.id in (*out.to, *out.fallback):
        raise click.UsageError(f"{identity.id} is this authority: it cannot send to itself")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pinned = PinnedDirectory.load(settings)
    queue = not opts["no_queue"]
    result = run(lambda: send(settings, identity, pinned, out, clock=obj.clock, queue=queue))
    render_send(out, result, opts["as_json"])


def _prepare_outgoing(opts: Mapping[str, Any], now: int) -> Outgoing:
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
            raise UsageRefused(
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
            err_console().print(
                text(
                    f"{PROG}: warning: {code} is not a known handling code; recipients "
                    "will treat it as restricted"
                )
            )

    # Authority ids are lower case: accept any case (a typo gets suggestions at send time).
    to = tuple(v.strip().lower() for v in opts["to"])
    fallback = tuple(v.strip().lower() for v in opts["fallback"])
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
    return Outgoing(
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
    kind = mimetypes.guess_type(path.name)[0]
    return kind is not None and kind.startswith("image/")
