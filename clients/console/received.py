"""The console's pages about what this authority received: the inbox, a message, its
attachments, acknowledging and rejecting, and the live stream of changes.

The inbox is :func:`clients.escalations.inbox_view` (as ``notice inbox`` shows it):
most urgent first (priority, then how overdue), reminded and released messages flagged,
and the escalation notices about other authorities' overdue messages ("escalated to
you"). Decisions go through :func:`clients.decisions.decide` (the outbox), so they work
while the relay is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from aiohttp import web

from clients.console.base import (
    CONTEXT,
    CSP,
    SESSION,
    audit,
    log,
    origin,
    page,
    see_other,
    tr,
)
from clients.console.i18n import N_
from clients.decisions import Actor, DecisionStatus
from clients.escalations import InboxRow, inbox_view, overdue_ms
from clients.kinds import HANDLING_CODES, describe
from clients.refusal import RefusedError
from clients.store import InboxError, InboxMessage, StoredEvent
from keys.encoding import is_uuid7
from keys.errors import KeysError

__all__ = ["acknowledge", "attachment", "events", "inbox", "message", "reject"]

LIVE_POLL_S = 1.0
"""How often the live stream looks at the inbox for a change."""


def _title(m: InboxMessage) -> tuple[str, str]:
    """(the kind's label, the notice's first field) for a list of messages."""
    notice = m.notice
    if notice is None:
        return m.kind or "Message", ""
    rows = describe(notice)
    return rows[0][1], rows[1][1] if len(rows) > 1 else ""


def _released(m: InboxMessage | None, events_: Sequence[StoredEvent]) -> bool:
    """Released to this authority: pushed as a fallback by escalation, or addressed to it
    as a fallback in the first place."""
    return (m is not None and m.role == "fallback") or any(e.event == "released" for e in events_)


def _row(r: InboxRow) -> dict[str, Any]:
    escalated = None
    if r.notice is not None:
        d = r.notice.data
        to = d.get("to")
        escalated = {
            "as": d.get("as"),
            "sender": d.get("sender"),
            "to": ", ".join(map(str, to)) if isinstance(to, list) else "",
            "step": d.get("step"),
            "at": r.notice.at,
        }
    return {
        "id": r.msg_id,
        "m": r.msg,
        "priority": r.priority,
        "title": _title(r.msg) if r.msg is not None else (r.msg_id, ""),
        "overdue": r.overdue is not None,
        "reminders": r.reminders,
        "released": _released(r.msg, r.events),
        "escalated": escalated,
    }


async def inbox(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    rows = await inbox_view(ctx.inbox, now=ctx.clock(), limit=500, show_all=True)
    # What still needs someone first, in inbox_view's order (priority, then overdue).
    rows.sort(key=lambda r: r.msg is not None and r.msg.state != "new")
    return page(request, "inbox.html", rows=[_row(r) for r in rows])


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``change`` whenever the inbox, the sent messages or their
    receipts change, so the page updates without a reload (static/console.js)."""
    inbox_ = request.app[CONTEXT].inbox
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    last = await inbox_.changes()
    await response.write(b"retry: 3000\nevent: ready\ndata: {}\n\n")
    try:
        while True:
            await asyncio.sleep(LIVE_POLL_S)
            now = await inbox_.changes()
            if now != last:
                last = now
                await response.write(b"event: change\ndata: {}\n\n")
            else:
                await response.write(b": keep-alive\n\n")
    except (ConnectionResetError, asyncio.CancelledError, InboxError):
        pass
    return response


async def _message(request: web.Request) -> InboxMessage:
    msg_id = request.match_info["id"]
    found = None
    if is_uuid7(msg_id):
        found = await request.app[CONTEXT].inbox.received.get(msg_id)
    if found is None:
        raise web.HTTPNotFound(
            reason=tr(request, N_("No such message")),
            text=tr(request, N_("There is no such message here.")),
        )
    return found


async def message(request: web.Request) -> web.Response:
    m = await _message(request)
    notice = m.notice
    ctx = request.app[CONTEXT]
    files = []
    for a in m.attachments:
        path = ctx.inbox.attachment_path(m.id, a.name)
        here = await asyncio.to_thread(path.is_file)
        files.append({"a": a, "here": here, "image": a.type.startswith("image/")})
    events_ = await ctx.inbox.events.of_message(m.id)
    upload = await ctx.inbox.uploads.get(m.id)
    await audit(request, "opened", message_id=m.id)
    return page(
        request,
        "message.html",
        m=m,
        rows=describe(notice) if notice is not None else [("Content", str(m.content))],
        handling=[(code, HANDLING_CODES.get(code)) for code in m.handling],
        files=files,
        overdue=overdue_ms(m, events_, ctx.clock()) is not None,
        reminders=sum(1 for e in events_ if e.event == "reminded"),
        released=_released(m, events_),
        history=_history(m, events_),
        upload=upload,
        error=request.query.get("error"),
    )


def _history(m: InboxMessage, events_: list[StoredEvent]) -> list[tuple[int, str, str]]:
    """(time, what, who) of the message's life here, oldest first: signed and sent,
    received and verified, each reminder and release the relay pushed, the decision."""
    out = [
        (m.created, N_("signed and sent"), m.sender),
        (m.received_at, N_("received here, signature verified, decrypted"), ""),
    ]
    names = {"reminded": N_("reminder from the relay"), "released": N_("released to you")}
    out += [(e.at, names[e.event], "") for e in events_ if e.event in names]
    if m.state == "acknowledged" and m.acknowledged_at is not None:
        out.append((m.acknowledged_at, N_("acknowledged"), m.acknowledged_by or ""))
    elif m.state == "rejected" and m.decided_at is not None:
        out.append((m.decided_at, N_("rejected"), ""))
    return sorted(out, key=lambda row: row[0])


async def attachment(request: web.Request) -> web.StreamResponse:
    m = await _message(request)
    name = request.match_info["name"]
    entry = next((a for a in m.attachments if a.name == name), None)
    if entry is None:
        raise web.HTTPNotFound(
            reason=tr(request, N_("No such attachment")),
            text=tr(request, N_("No such attachment.")),
        )
    path = request.app[CONTEXT].inbox.attachment_path(m.id, name)
    if not await asyncio.to_thread(path.is_file):
        raise web.HTTPNotFound(
            reason=tr(request, N_("Not downloaded yet")),
            text=tr(request, N_("Not downloaded yet.")),
        )
    image = entry.type in ("image/jpeg", "image/png", "image/gif", "image/webp")
    await audit(request, "downloaded", message_id=m.id, detail=name[:200])
    return web.FileResponse(
        path,
        headers={
            "Content-Type": entry.type if image else "application/octet-stream",
            "Content-Disposition": f'{"inline" if image else "attachment"}; filename="{path.name}"',
        },
    )


async def _decide(request: web.Request, status: DecisionStatus) -> web.StreamResponse:
    m = await _message(request)
    ctx, session = request.app[CONTEXT], request[SESSION]
    form = await request.post()
    kwargs: dict[str, Any] = {"person": session.person}
    if status == "rejected":
        reason = str(form.get("reason", "")).strip()
        if not reason:
            wanted = tr(request, N_("Give a reason to reject."))
            return see_other(f"/messages/{m.id}?error={quote(wanted)}")
        kwargs = {"reason": reason}
    try:  # the decision goes into the audit trail as soon as it stands (decide)
        await ctx.decide(
            ctx.settings,
            ctx.identity,
            ctx.inbox.path,
            m.id,
            status,
            clock=ctx.clock,
            actor=Actor(session.person, origin(request)),
            **kwargs,
        )
    except (RefusedError, InboxError, KeysError) as exc:
        return see_other(f"/messages/{m.id}?error={quote(str(exc)[:300])}")
    log.info("console: %s %s message %s", session.person, status, m.id)
    return see_other(f"/messages/{m.id}")


async def acknowledge(request: web.Request) -> web.StreamResponse:
    return await _decide(request, "acknowledged")


async def reject(request: web.Request) -> web.StreamResponse:
    return await _decide(request, "rejected")
