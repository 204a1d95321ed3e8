"""Rendering for ``notice``: rich tables and text for people, JSON for programs.

Text from another authority is made harmless for a terminal (:func:`clean`); times are
shown in UTC. Each ``render_*`` function prints one command's result.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from clients.decisions import Decision
from clients.escalations import InboxRow
from clients.kinds import (
    HANDLING_CODES,
    InvalidNoticeError,
    describe,
    describe_handling,
    parse_notice,
    summary,
)
from clients.kinds import deadline as notice_deadline
from clients.sender import Outgoing, SendResult
from clients.store import InboxMessage, ReceiptUpload, StoredEvent

__all__ = [
    "clean",
    "err_console",
    "iso",
    "print_json",
    "render_decision",
    "render_inbox",
    "render_message",
    "render_notice_only",
    "render_send",
    "stdout_console",
    "text",
]

# --- safe text --------------------------------------------------------------------------

_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean(text: str) -> str:
    """Text from another authority, made harmless for a terminal.

    Control characters (ANSI escapes included) and bidirectional overrides become
    U+FFFD; newlines and tabs are kept.
    """
    return "".join(
        "\ufffd" if (unicodedata.category(ch) == "Cc" and ch not in "\n\t") or ch in _BIDI else ch
        for ch in text
    )


def text(value: str | None, style: str = "") -> Text:
    """A rich Text that is never parsed as markup."""
    return Text(clean(value if value is not None else "—"), style=style)


# --- times -------------------------------------------------------------------------------


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


# --- output ------------------------------------------------------------------------------


def _console() -> Console:
    # A terminal uses its own width; piped into a file or a log, keep rows on one line.
    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)


def err_console() -> Console:
    return Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=True))


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _priority(prio: str) -> Text:
    return Text(prio, style={"urgent": "bold red", "high": "bold yellow"}.get(prio, ""))


# Shared with the other command modules (e.g. :mod:`clients.cli.directory`).
stdout_console = _console
print_json = _print_json
iso = _iso


# --- send ---------------------------------------------------------------------------------


def render_send(out: Outgoing, result: SendResult, as_json: bool) -> None:
    sealed = result.sealed
    h = sealed.header
    if as_json:
        _print_json(
            {
                "id": sealed.id,
                "state": result.state,
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
                "receipt_verified": not result.queued,
                "duplicate": result.duplicate,
                **_send_plan_json(result),
                "queued_because": result.why_queued,
            }
        )
        return
    con = _console()
    head = "QUEUED " if result.queued else "Sent "
    con.print(Text.assemble(head, (sealed.id, "bold"), f"  ({h.prio})"))
    con.print(text(f"  to:          {', '.join(h.to)}"))
    if h.fallbacks:
        con.print(text(f"  fallback:    {', '.join(h.fallbacks)}"))
    con.print(text(f"  notice:      {summary(out.notice)}"))
    if out.handling:
        con.print(text(f"  handling:    {', '.join(out.handling)}"))
    for a in result.attachments:
        con.print(text(f"  attachment:  {a.name} ({_size(a.size)}, {a.type})"))
    if h.ack_by is not None:
        con.print(f"  ack by:      {_when(h.ack_by)}")
    con.print(f"  expires:     {_when(h.expires)}")
    if result.queued:
        con.print(
            text(
                f"queued in the outbox: the relay did not take it now ({result.why_queued}); "
                "the daemon will submit it as soon as the relay answers. Follow it with "
                f"'notice sent' or 'notice watch {sealed.id}'."
            )
        )
        return
    again = " (already accepted before)" if result.duplicate else ""
    con.print(
        Text.assemble(
            "accepted by ",
            (result.relay, "bold"),
            f" at {_when(result.accepted_at)}{again}; receipt verified",
        )
    )
    for line in offline_lines(result):
        con.print(Text(line, style="bold yellow"))


def _hhmm(ms: int, day_of: int) -> str:
    """``08:12`` on the same UTC day as ``day_of``, else ``2027-01-16 08:12``."""
    t = datetime.fromtimestamp(ms / 1000, tz=UTC)
    same = t.date() == datetime.fromtimestamp(day_of / 1000, tz=UTC).date()
    return t.strftime("%H:%M" if same else "%Y-%m-%d %H:%M")


def offline_lines(result: SendResult) -> list[str]:
    """For each recipient whose daemon is offline: since when, and when the reminder and
    the release will happen (the relay's escalation plan)."""
    h = result.sealed.header
    if result.accepted_at is None:
        return []  # queued: the relay has not answered, there is no plan yet
    ref = result.accepted_at
    plan: list[str] = []
    for step in result.schedule:
        when = _hhmm(step.due, ref)
        if step.name == "remind":
            plan.append(f"reminder at {when}")
        elif step.name == "release":
            target = ", ".join(h.fallbacks) if h.fallbacks else "the deputies and duty desk"
            plan.append(f"released to {target} at {when}")
        elif step.name == "notify":
            plan.append(f"supervisor notified at {when}")
    tail = f": {', '.join(plan)}" if plan else ""
    lines = []
    for p in result.recipients:
        if p.reachable:
            continue
        since = ""
        if p.unreachable_since is not None:
            since = f" since {_hhmm(p.unreachable_since, ref)} UTC"
        lines.append(f"{p.id}'s daemon is offline{since}{tail}")
    return lines


def _send_plan_json(result: SendResult) -> dict[str, Any]:
    return {
        "recipients": [
            {
                "id": p.id,
                "reachable": p.reachable,
                "unreachable_since": _iso(p.unreachable_since),
            }
            for p in result.recipients
        ],
        "schedule": [{"step": s.step, "name": s.name, "due": _iso(s.due)} for s in result.schedule],
        "offline": offline_lines(result),
    }


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


def duration(ms: int) -> str:
    """A span for people: ``45 s``, ``12 min``, ``3 h 05 min``, ``2 d 4 h``."""
    secs = max(0, ms // 1000)
    if secs < 60:
        return f"{secs} s"
    mins = secs // 60
    if mins < 60:
        return f"{mins} min"
    hours, mins = divmod(mins, 60)
    if hours < 48:
        return f"{hours} h {mins:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _event_json(e: StoredEvent) -> dict[str, Any]:
    data = {k: v for k, v in e.data.items() if k != "notice"}
    for key in ("ack_by", "signed_at"):
        if isinstance(data.get(key), int):
            data[key] = _iso(data[key])  # type: ignore[arg-type]
    return {"event": e.event, "at": _iso(e.at), "occurrence": e.occurrence, **data}


def _row_json(row: InboxRow) -> dict[str, Any]:
    m = row.msg
    out: dict[str, Any] = {
        "id": row.msg_id,
        "priority": row.priority,
        "reminded": row.reminders,
        "released_to_you": row.released,
        "overdue_by_s": None if row.overdue is None else row.overdue // 1000,
        "flags": list(row.flags),
        "escalation": None if row.notice is None else _event_json(row.notice),
        "events": [_event_json(e) for e in row.events if e is not row.notice],
    }
    if m is None:
        n = row.notice.data if row.notice is not None else {}
        out.update(
            received=_iso(row.notice.at) if row.notice else None,
            **{"from": n.get("sender"), "to": n.get("to")},
            role=n.get("as"),
            state="escalated to you",
        )
        return out
    out.update(
        received=_iso(m.received_at),
        **{"from": m.sender},
        role=m.role,
        kind=m.kind,
        summary=_summary_of(m),
        deadline=_iso(notice_deadline(m.notice)) if m.notice else None,
        ack_by=_iso(m.ack_by),
        handling=list(m.handling),
        attachments=len(m.attachments),
        state=m.state,
    )
    return out


def _upload_note(upload: ReceiptUpload | None) -> str | None:
    """A decision whose signed receipt the relay has not confirmed yet (or refused)."""
    if upload is None or upload.state == "sent":
        return None
    if upload.state == "failed":
        return f"receipt REFUSED by the relay: {upload.last_error}"
    return "receipt not sent yet (the daemon sends it)"


def render_inbox(
    rows: list[InboxRow],
    show_all: bool,
    as_json: bool,
    *,
    uploads: Mapping[str, ReceiptUpload] | None = None,
) -> None:
    """``notice inbox``: most urgent first (priority, then how overdue); a decision whose
    receipt the relay has not confirmed yet is marked."""
    uploads = uploads or {}
    if as_json:
        out = []
        for r in rows:
            entry = _row_json(r)
            entry["receipt_upload"] = u.state if (u := uploads.get(r.msg_id)) else None
            out.append(entry)
        _print_json(out)
        return
    title = "Inbox" if show_all else "Inbox: to acknowledge"
    table = Table(title=f"{title} ({len(rows)}), most urgent first")
    table.add_column("id", no_wrap=True)
    table.add_column("received (UTC)", no_wrap=True)
    table.add_column("from", no_wrap=True)
    table.add_column("priority", no_wrap=True)
    table.add_column("notice")
    table.add_column("deadline (UTC)", no_wrap=True)
    table.add_column("escalation")
    table.add_column("state", no_wrap=True)
    for row in rows:
        esc = list(row.flags)
        if row.overdue is not None:
            esc.append(f"overdue by {duration(row.overdue)}")
        m = row.msg
        if m is None:
            n = row.notice.data if row.notice is not None else {}
            table.add_row(
                row.msg_id,
                _cell(row.notice.at if row.notice else None),
                text(str(n.get("sender") or "?")),
                _priority(row.priority),
                text(str(n.get("reason") or "")),
                "—",
                Text("\n".join(esc), style="bold red"),
                "escalated to you",
            )
            continue
        label, when = _deadline_of(m)
        flags = " [H]" if m.handling else ""
        clip = f" +{len(m.attachments)} att." if m.attachments else ""
        table.add_row(
            m.id,
            _cell(m.received_at),
            text(m.sender),
            _priority(m.priority),
            text(_summary_of(m) + clip + flags),
            f"{label} {_cell(when)[:16]}".strip() if when is not None else "—",
            Text("\n".join(esc), style="bold red") if esc else "—",
            _state_cell(m.state, uploads.get(m.id)),
        )
    con = _console()
    con.print(table)
    if any(r.msg is not None and r.msg.handling for r in rows):
        con.print(Text("[H]: handling restrictions apply; see 'notice show MSGID'."))


def _history_line(e: StoredEvent) -> str:
    d = e.data
    if e.event == "reminded":
        return f"reminded: {d.get('note') or 'not acknowledged in time'}"
    if e.event == "released":
        return f"{d.get('note') or 'released to you'}"
    if e.event == "escalation":
        who = f" from {d['sender']}" if d.get("sender") else ""
        names = d.get("to")
        to = f" to {', '.join(map(str, names))}" if isinstance(names, list) and names else ""
        step = f" (step {d['step']})" if d.get("step") else ""
        return (
            f"escalated to you ({d.get('as')}) about this message{who}{to}{step}: {d.get('reason')}"
        )
    if e.event == "acknowledged":
        return f"acknowledged by {d.get('by')} ({d.get('person')})"
    return e.event


def render_history(events: list[StoredEvent], con: Console) -> None:
    """A message's escalation history (for ``notice show``)."""
    if not events:
        return
    table = Table(title="Escalation history", title_justify="left")
    table.add_column("received (UTC)", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("what")
    for e in events:
        table.add_row(_cell(e.at), e.event, text(_history_line(e)))
    con.print(table)


def render_notice_only(msg_id: str, events: list[StoredEvent], as_json: bool) -> None:
    """``notice show`` for a message we do not hold: what we were told about it."""
    if as_json:
        _print_json({"id": msg_id, "in_inbox": False, "events": [_event_json(e) for e in events]})
        return
    con = _console()
    con.print(
        Text.assemble(
            "Message ",
            (msg_id, "bold"),
            " is not in this inbox: you were told about it by escalation.",
        )
    )
    render_history(events, con)


def _state_cell(state: str, upload: ReceiptUpload | None) -> Text:
    note = _upload_note(upload)
    if note is None:
        return Text(state)
    style = "bold red" if upload is not None and upload.state == "failed" else "yellow"
    return Text.assemble(clean(state), "\n", (clean(note), style))


def render_message(
    msg: InboxMessage,
    files: list[Path | None],
    as_json: bool,
    events: list[StoredEvent] | None = None,
    *,
    upload: ReceiptUpload | None = None,
) -> None:
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
                "receipt_upload": upload.state if upload else None,
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
                "events": [_event_json(e) for e in events or []],
            }
        )
        return
    con = _console()
    if msg.handling:
        con.print(
            Panel(
                text("\n".join(handling)),
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
    meta.add_row("From", text(msg.sender))
    meta.add_row(
        "To",
        text(
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
    note = _upload_note(upload)
    meta.add_row("State", _state_cell(state, upload) if note else text(state))
    con.print(meta)
    body = Table(show_header=False, title="Notice", title_justify="left", box=None, pad_edge=False)
    body.add_column(style="bold", no_wrap=True)
    body.add_column()
    if notice is not None:
        for label, value in describe(notice):
            body.add_row(label, text(value))
    else:
        body.add_row("Invalid", text(_notice_error(msg) or "not a valid notice"))
        body.add_row("Content", text(json.dumps(msg.content, indent=2, ensure_ascii=False)))
    con.print(body)
    if msg.attachments:
        att = Table(title="Attachments", title_justify="left")
        att.add_column("name")
        att.add_column("type", no_wrap=True)
        att.add_column("size", no_wrap=True)
        att.add_column("local file")
        for a, p in zip(msg.attachments, files, strict=True):
            att.add_row(
                text(a.name),
                text(a.type),
                _size(a.size),
                text(str(p)) if p else Text("not downloaded yet", style="yellow"),
            )
        con.print(att)
    render_history(events or [], con)


# --- ack / reject -------------------------------------------------------------------------


def render_decision(d: Decision, as_json: bool) -> None:
    m = d.msg
    if as_json:
        _print_json(
            {
                "id": m.id,
                "status": d.status,
                "person": m.acknowledged_by,
                "reason": m.rejected_reason,
                "at": _iso(d.at),
                "receipt_sent": d.sent,
                "receipt_pending": None if d.sent else d.pending,
                "repeat": d.repeat,
                "duplicate_at_relay": not d.new_at_relay,
            }
        )
        return
    who = f" by {m.acknowledged_by}" if d.status == "acknowledged" else ""
    why = f" ({m.rejected_reason})" if d.status == "rejected" else ""
    again = " again" if d.repeat else ""
    seen = "" if d.new_at_relay else " (the relay already had it)"
    if not d.sent:
        _console().print(
            text(
                f"{d.status.capitalize()} {m.id}{who}{why} at {_when(d.at)}; recorded. The "
                f"relay cannot take the signed receipt now ({d.pending}): the daemon will "
                f"send it to the relay for {m.sender} as soon as it answers ('notice inbox' "
                "shows it until then)"
            )
        )
        return
    _console().print(
        text(
            f"{d.status.capitalize()} {m.id}{who}{why} at {_when(d.at)}; signed receipt sent"
            f"{again} to the relay for {m.sender}{seen}"
        )
    )
