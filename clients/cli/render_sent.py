"""Rendering for ``notice status``, ``notice sent`` and ``notice watch``: the messages
this authority sent and their receipt timelines (tables and text for people, JSON for
programs; the shared helpers are in :mod:`clients.cli.render`)."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from clients.cli.render import (
    _cell,
    _console,
    _iso,
    _print_json,
    _priority,
    _when,
    clean,
    text,
)
from clients.sender import ReceiptRow, SentStatus
from clients.store import SentMessage
from keys.models import ReceiptBody

__all__ = ["receipt_event", "render_sent", "render_status"]


def _detail(b: ReceiptBody) -> str:
    parts = []
    if b.person:
        parts.append(f"person: {b.person}")
    if b.reason:
        parts.append(f"reason: {b.reason}")
    if b.step is not None:
        parts.append(f"step {b.step}")
    return "; ".join(parts)


def render_status(st: SentStatus, as_json: bool) -> None:
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
        con.print(text(f"  notice:   {st.summary}"))
    if st.to:
        con.print(text(f"  to:       {', '.join(st.to)}"))
    if st.fallback:
        con.print(text(f"  fallback: {', '.join(st.fallback)}"))
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
                text(r.error),
                Text("INVALID", style="bold red"),
            )
            continue
        b = r.body
        table.add_row(
            _cell(b.at),
            b.status,
            text(b.by),
            text(_detail(b) or "—"),
            Text(verified, style="green"),
        )
    con.print(table)
    style = "bold red" if st.state in {"rejected", "expired"} else "bold"
    con.print(Text.assemble("State: ", (st.state, style)))
    if st.invalid:
        con.print(Text(f"{st.invalid} receipt(s) do NOT verify", style="bold red"))


def receipt_event(row: ReceiptRow) -> tuple[dict[str, Any], str]:
    """One receipt of a timeline as a JSON event and as a line of text (``notice watch``)."""
    b = row.body
    if b is None or row.error is not None:
        return (
            {"event": "receipt", "verified": False, "error": row.error, "token": row.token},
            clean(f"INVALID receipt: {row.error}"),
        )
    event = {
        "event": "receipt",
        "status": b.status,
        "at": _iso(b.at),
        "by": b.by,
        "person": b.person,
        "reason": b.reason,
        "step": b.step,
        "verified": True,
    }
    detail = _detail(b)
    line = f"{_when(b.at)}  {b.status:<12} by {b.by}{'  ' + detail if detail else ''}  (verified)"
    return event, clean(line)


def render_sent(items: list[SentMessage], as_json: bool) -> None:
    if as_json:
        _print_json(
            [
                {
                    "id": s.id,
                    "sent": _iso(s.created),
                    "to": list(s.to),
                    "priority": s.priority,
                    "summary": s.summary,
                    "state": s.state,
                    "outbox_error": s.outbox_error if s.outbox_state == "failed" else None,
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
    table.add_column("state", no_wrap=True)
    table.add_column("last receipt", no_wrap=True)
    table.add_column("at (UTC)", no_wrap=True)
    for s in items:
        state = Text(s.state, style=_STATE_STYLE.get(s.state, ""))
        if s.outbox_state == "failed" and s.outbox_error:
            state.append(f"\n{clean(s.outbox_error)}", style="red")
        table.add_row(
            s.id,
            _cell(s.created),
            text(", ".join(s.to)),
            _priority(s.priority),
            text(s.summary),
            state,
            s.last_status or "—",
            _cell(s.last_status_at),
        )
    con = _console()
    con.print(table)
    if any(s.state == "queued" for s in items):
        con.print(
            Text("queued: in the local outbox; the daemon submits it as soon as the relay answers.")
        )


_STATE_STYLE = {
    "queued": "yellow",
    "sent": "yellow",
    "acknowledged": "green",
    "rejected": "bold red",
    "expired": "bold red",
    "failed": "bold red",
}
