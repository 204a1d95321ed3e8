"""The ``/ops`` dashboard: a view of the operator snapshot, and the page that shows it.

:func:`dashboard_view` turns a snapshot (:func:`relay.status.build_snapshot`) into the
dashboard's text: every time, age and latency is formatted here, by the formatters of
:mod:`relay.status` that ``relay status`` prints with, and nowhere else. The page is
rendered from this view by the Jinja2 template ``static/ops.html`` (autoescaped), so it
reads without JavaScript; each server-sent snapshot carries the same view, and
``static/ops.js`` only copies its strings into the page. The template, ``ops.css`` and
``ops.js`` are package data, read once at start-up (:func:`load_dashboard`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2

from relay.status import fmt_age, fmt_event, fmt_latency, fmt_next, fmt_presence, fmt_time

Json = Mapping[str, Any]
Cell = dict[str, str]
"""One table cell: its ``text`` and its CSS ``cls`` (may be empty)."""

STATIC_PACKAGE = "relay.api"
STATIC_DIR = "static"
ASSETS = {"ops.css": "text/css", "ops.js": "text/javascript"}
"""The files served under ``/ops/static/``, with their media types."""

AUTHORITY_COLUMNS = (
    ("Authority", False),
    ("Daemon", False),
    ("Last seen", False),
    ("Last probe", False),
    ("Queue", True),
    ("Oldest unacked", True),
    ("Open escalations", True),
    ("Latency p50", True),
    ("Latency p95", True),
)
ESCALATION_COLUMNS = (
    "Message",
    "From",
    "To",
    "Priority",
    "Step",
    "Ack by",
    "Overdue by",
    "Next step",
    "State",
    "Timeline",
)
TIMELINE_COLUMNS = ("Status", "By", "Signed at", "Received at", "Detail")
NO_ESCALATIONS = "No open escalations."


def _cell(text: object, cls: str = "") -> Cell:
    return {"text": "" if text is None else str(text), "cls": cls}


def _columns(columns: Sequence[tuple[str, bool]] | Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"title": c, "numeric": False} if isinstance(c, str) else {"title": c[0], "numeric": c[1]}
        for c in columns
    ]


def _authority(a: Json) -> dict[str, Any]:
    probe = fmt_time(a.get("probe_answered_at"))
    if a.get("probe_rtt_ms") is not None:
        probe += f" ({a['probe_rtt_ms']} ms)"
    # Connected, answered a probe once, but not lately.
    stale = a.get("connected") and a.get("reachable") is False and a.get("probe_answered_at")
    open_esc = a.get("open_escalations", 0)
    return {
        "id": str(a.get("id")),
        "name": str(a.get("name")),
        "cells": [
            _cell(fmt_presence(a), "presence ok" if a.get("connected") else "presence bad"),
            _cell("now" if a.get("connected") else fmt_time(a.get("last_seen"))),
            _cell(probe, "warn" if stale else ""),
            _cell(a.get("queue_depth", 0), "num queue"),
            _cell(fmt_age(a.get("oldest_unacked_age_s")), "num"),
            _cell(open_esc, "num warn" if open_esc else "num"),
            _cell(fmt_latency(a.get("latency_p50_s")), "num"),
            _cell(fmt_latency(a.get("latency_p95_s")), "num"),
        ],
    }


def _escalation(m: Json) -> dict[str, Any]:
    return {
        "id": str(m.get("id")),
        "cells": [
            _cell(m.get("id"), "id"),
            _cell(m.get("sender")),
            _cell(", ".join(m.get("to", []))),
            _cell(m.get("priority")),
            _cell(m.get("escalation_step") or "—", "warn"),
            _cell(fmt_time(m.get("ack_by") or m.get("expected_by"))),
            _cell(fmt_age(m.get("overdue_by_s")), "warn" if m.get("overdue_by_s") else ""),
            _cell(fmt_next(m)),
            _cell(m.get("state")),
        ],
        "timeline": [fmt_event(e) for e in m.get("timeline", [])],
    }


def dashboard_view(snap: Json) -> dict[str, Any]:
    """The dashboard's text for one snapshot (JSON-serialisable; sent with each SSE event).

    ``summary`` maps an element id of the page to its text and class; ``authorities``
    and ``escalations`` are the table rows, each with its cells.
    """
    timers = snap.get("timers", {})
    overdue = int(timers.get("overdue", 0))
    healthy = bool(snap.get("healthy"))
    escalations = snap.get("escalations", [])
    summary = {
        "health": _cell(
            "healthy" if healthy else "degraded: " + "; ".join(snap.get("problems", [])),
            "ok" if healthy else "bad",
        ),
        "directory-version": _cell(snap.get("directory_version")),
        "as-of": _cell(fmt_time(snap.get("now"))),
        "queued": _cell(snap.get("queued", 0)),
        "connected-daemons": _cell(snap.get("connected_daemons", 0)),
        "timers-pending": _cell(timers.get("pending", 0)),
        "timers-overdue": _cell(overdue, "bad" if overdue else ""),
        "timers-next": _cell(fmt_time(timers.get("next_due"))),
        "escalation-count": _cell(len(escalations)),
    }
    return {
        "relay": str(snap.get("relay")),
        "network": str(snap.get("network")),
        "summary": summary,
        "authorities": [_authority(a) for a in snap.get("authorities", [])],
        "escalations": [_escalation(m) for m in escalations],
        "no_escalations": NO_ESCALATIONS,
    }


def timeline_view(message: Json) -> dict[str, Any]:
    """A looked-up message: one summary line and a row of cells per timeline event."""
    summary = (
        f"{message.get('id')} — from {message.get('sender')} to "
        f"{', '.join(message.get('to', []))} — {message.get('priority')}, {message.get('state')}"
    )
    rows = [
        [
            _cell(str(e.get("status")) + (f" ({e['step']})" if e.get("step") else "")),
            _cell(e.get("by"), "id"),
            _cell(fmt_time(e.get("at"))),
            _cell(fmt_time(e.get("received_at"))),
            _cell(e.get("reason") or ""),
        ]
        for e in message.get("timeline", [])
    ]
    return {"summary": summary, "rows": rows}


@dataclass(frozen=True, slots=True)
class Dashboard:
    """The compiled page template and the static assets, loaded once."""

    template: jinja2.Template
    assets: Mapping[str, bytes]

    def render(self, snap: Json, *, lookup: str = "", message: Json | None = None) -> str:
        return self.template.render(
            view=dashboard_view(snap),
            lookup=lookup,
            message=timeline_view(message) if message is not None else None,
            authority_columns=_columns(AUTHORITY_COLUMNS),
            escalation_columns=_columns(ESCALATION_COLUMNS),
            timeline_columns=_columns(TIMELINE_COLUMNS),
        )


def _load() -> Dashboard:
    static = resources.files(STATIC_PACKAGE).joinpath(STATIC_DIR)
    env = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    template = env.from_string(static.joinpath("ops.html").read_text(encoding="utf-8"))
    assets = {name: static.joinpath(name).read_bytes() for name in ASSETS}
    return Dashboard(template, assets)


async def load_dashboard() -> Dashboard:
    """Read and compile the package data, off the event loop."""
    return await asyncio.to_thread(_load)
