"""Escalations as a person sees them: what the daemon records, and the inbox by urgency.

The relay pushes escalation as queue items (:mod:`keys.lifecycle`): a **reminder** is the
envelope again with ``reminder: true``; a **release** is the envelope, with a "released
to you" note, to a fallback recipient; an **escalation notice** to a deputy, duty desk or
supervisor is a relay-signed ``escalated`` receipt about another authority's message.
:func:`envelope_event` and :func:`notice_event` turn them into events for
:class:`clients.store.Events` (metadata only); :func:`inbox_view` builds ``notice
inbox``: each open message with its events, the escalation notices, sorted by urgency
(priority, then how overdue: past its ack-by, or past its first reminder).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

from clients.store import EventName, Inbox, InboxMessage, StoredEvent
from keys import wire
from keys.directory import Directory
from keys.envelope import OpenedEnvelope
from keys.models import ReceiptBody

__all__ = [
    "NOTICE_WINDOW_MS",
    "InboxRow",
    "envelope_event",
    "inbox_view",
    "notice_event",
    "overdue_ms",
    "role_of",
]

PRIORITY_RANK = {"urgent": 0, "high": 1, "routine": 2}
NOTICE_WINDOW_MS = 24 * 3_600_000
"""Escalation notices (about others' messages) show in ``notice inbox`` this long."""
_FROM = re.compile(r"^escalation: message from (?P<sender>[a-z0-9][a-z0-9._-]{1,62}): ")
_TO = re.compile(
    # "policy step 2 (release), due 2026-12-01 08:32:00 UTC: fr-oclcc has not acknowledged"
    r"^(?:policy step \d+ \([a-z]+\), due [0-9: -]+ UTC: )?"
    r"(?P<to>[a-z0-9][a-z0-9._, -]*?) (?:has not|did not) acknowledge"
)


def is_release(item: wire.EnvelopeItem) -> bool:
    """An envelope pushed with a note but not as a reminder: released to us (fallback)."""
    return not item.reminder and item.note is not None


def envelope_event(
    item: wire.EnvelopeItem, opened: OpenedEnvelope
) -> tuple[EventName, str, dict[str, JsonValue]] | None:
    """(event, occurrence, data) for a reminder or a release; None for a plain delivery.

    The occurrence is the relay's queue seq: the same item pushed again after a
    reconnect is the same event; a later reminder is a new one.
    """
    if not item.reminder and item.note is None:
        return None
    h = opened.header
    data: dict[str, JsonValue] = {
        "note": item.note,
        "sender": h.from_,
        "to": list(h.to),
        "priority": h.prio,
        "ack_by": h.ack_by,
    }
    return ("reminded" if item.reminder else "released"), str(item.seq), data


def role_of(directory: Directory, me: str, recipients: Sequence[str], step: int | None) -> str:
    """Why we are told: ``deputy``, ``duty desk`` or ``supervisor`` of a recipient."""
    entries = [e for r in recipients if (e := directory.get(r)) is not None]
    if not entries:
        entries = list(directory.authorities)
    if step != 3:
        if any(me in e.escalation.deputies for e in entries):
            return "deputy"
        if any(e.escalation.duty_desk == me for e in entries):
            return "duty desk"
    if any(e.escalation.supervisor == me for e in entries):
        return "supervisor"
    return "deputy" if step == 2 else "supervisor" if step == 3 else "contact"


def notice_event(
    body: ReceiptBody, note: str | None, token: str, directory: Directory, me: str
) -> tuple[str, dict[str, JsonValue]]:
    """(occurrence, data) for a verified escalation notice about another's message."""
    sender = m.group("sender") if note and (m := _FROM.match(note)) else None
    to_match = _TO.match(body.reason or "")
    to = [t.strip() for t in to_match.group("to").split(",")] if to_match else []
    data: dict[str, JsonValue] = {
        "as": role_of(directory, me, to, body.step),
        "sender": sender,
        "to": list(to),
        "reason": body.reason,
        "step": body.step,
        "signed_at": body.at,
        "signed_by": body.by,
        "note": note,
        "notice": token,
    }
    return f"step{body.step or 0}", data


# --- the inbox by urgency -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboxRow:
    """One line of ``notice inbox``: a received message with its events, or an
    escalation notice about another authority's message (``msg`` is None)."""

    msg_id: str
    priority: str
    msg: InboxMessage | None
    events: tuple[StoredEvent, ...] = ()
    notice: StoredEvent | None = None
    overdue: int | None = None
    """ms past the ack-by (or the first reminder); None when not overdue."""
    flags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reminders(self) -> int:
        return sum(1 for e in self.events if e.event == "reminded")

    @property
    def released(self) -> bool:
        return any(e.event == "released" for e in self.events)


def overdue_ms(msg: InboxMessage | None, events: Sequence[StoredEvent], now: int) -> int | None:
    """How long a message is overdue: past its ack-by, else past its first reminder."""
    if msg is not None and msg.state != "new":
        return None
    start = msg.ack_by if msg is not None else None
    if start is None:
        firsts = [e.at for e in events if e.event in ("reminded", "released", "escalation")]
        start = min(firsts) if firsts else None
    if start is None or now < start:
        return None
    return now - start


def _flags(row_events: Sequence[StoredEvent], notice: StoredEvent | None) -> tuple[str, ...]:
    out: list[str] = []
    reminded = sum(1 for e in row_events if e.event == "reminded")
    if reminded:
        out.append(f"reminded x{reminded}")
    if any(e.event == "released" for e in row_events):
        out.append("released to you")
    if notice is not None:
        d = notice.data
        sender = f" from {d['sender']}" if d.get("sender") else ""
        names = d.get("to")
        to = f" to {', '.join(map(str, names))}" if isinstance(names, list) and names else ""
        out.append(f"escalated to you ({d.get('as')}) about {notice.msg_id}{sender}{to}")
    return tuple(out)


def _sort_key(row: InboxRow) -> tuple[Any, ...]:
    received = row.msg.received_at if row.msg is not None else row.notice.at if row.notice else 0
    return (
        PRIORITY_RANK.get(row.priority, 3),
        0 if row.overdue is not None else 1,
        -(row.overdue or 0),
        -received,
    )


async def inbox_view(
    inbox: Inbox, *, now: int, limit: int, show_all: bool, include: Iterable[str] = ()
) -> list[InboxRow]:
    """``notice inbox``: open messages (all with ``show_all``), the messages named in
    ``include`` whatever their state (a decision still to upload), and recent escalation
    notices; most urgent first: priority, then how overdue, then newest."""
    msgs = list(await inbox.received.list(limit=limit, state=None if show_all else "new"))
    listed = {m.id for m in msgs}
    for msg_id in include:
        if msg_id not in listed and (extra := await inbox.received.get(msg_id)) is not None:
            msgs.append(extra)
    events = await inbox.events.of_messages(m.id for m in msgs)
    rows = []
    for m in msgs:
        evs = tuple(events.get(m.id, ()))
        rows.append(
            InboxRow(m.id, m.priority, m, evs, None, overdue_ms(m, evs, now), _flags(evs, None))
        )
    since = 0 if show_all else now - NOTICE_WINDOW_MS
    held = {m.id for m in msgs}
    latest: dict[str, StoredEvent] = {}
    for n in await inbox.events.latest("escalation", since=since, limit=limit):
        if n.msg_id not in held and n.msg_id not in latest:
            latest[n.msg_id] = n  # newest first: the latest step about each message
    for n in latest.values():
        # An escalation notice is about someone else's overdue message: treat it as urgent.
        rows.append(
            InboxRow(n.msg_id, "urgent", None, (n,), n, overdue_ms(None, (n,), now), _flags((), n))
        )
    rows.sort(key=_sort_key)
    return rows[:limit]
