"""The console's pages about what this authority sends and whom it can reach: compose,
sent messages with their live receipt timeline and evidence bundle, the directory.

Compose shows, before sending, whether each authority is reachable now (``GET
/v1/presence``) and when escalation would start for the priority and acknowledgement
time chosen (``GET /v1/policy``; the page's script recomputes it as they change). A
notice is sent with :func:`clients.sender.send`: accepted by the relay at once, or kept
in the outbox and sent by the daemon when the relay answers again.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import get_args
from urllib.parse import quote
from zoneinfo import ZoneInfo

from aiohttp import web

from clients.console.base import (
    CONTEXT,
    SESSION,
    ConsoleContext,
    audit,
    log,
    page,
    see_other,
    tr,
)
from clients.console.compose import FORMS, item_rows, read_form
from clients.console.i18n import N_
from clients.directory import PinnedDirectory
from clients.errors import ClientError
from clients.evidence import export_evidence
from clients.kinds import HANDLING_CODES
from clients.refusal import RefusedError
from clients.sender import Outgoing, send
from clients.store import InboxError
from keys import wire
from keys.encoding import is_uuid7
from keys.errors import KeysError
from keys.files import open_private, private_dir
from keys.lifecycle import STEP_NAMES, Step, schedule
from keys.models import Priority

__all__ = [
    "compose",
    "compose_form",
    "directory",
    "evidence",
    "plan",
    "sent",
    "sent_one",
]

DEFAULT_KIND = "identification_notice"
"""The form shown first (and when the kind asked for is unknown)."""

# --- sent -------------------------------------------------------------------------------


async def sent(request: web.Request) -> web.Response:
    rows = await request.app[CONTEXT].inbox.sent.list(limit=500)
    return page(request, "sent.html", rows=rows)


async def sent_one(request: web.Request) -> web.Response:
    msg_id = request.match_info["id"]
    inbox_ = request.app[CONTEXT].inbox
    found = await inbox_.sent.get(msg_id) if is_uuid7(msg_id) else None
    if found is None:
        raise web.HTTPNotFound(
            reason=tr(request, N_("No such message")),
            text=tr(request, N_("You sent no such message.")),
        )
    timeline = await inbox_.sent.timeline(msg_id)
    return page(
        request,
        "sent_one.html",
        m=found,
        timeline=timeline,
        error=request.query.get("error"),
        sent=request.query.get("sent"),
    )


async def evidence(request: web.Request) -> web.StreamResponse:
    """The message's evidence bundle (notice evidence), verified before it is given."""
    ctx = request.app[CONTEXT]
    msg_id = request.match_info["id"]
    if not is_uuid7(msg_id) or await ctx.inbox.sent.get(msg_id) is None:
        raise web.HTTPNotFound(
            reason=tr(request, N_("No such message")),
            text=tr(request, N_("You sent no such message.")),
        )
    try:
        pinned = await asyncio.to_thread(PinnedDirectory.load, ctx.settings)
        data, _ = await export_evidence(ctx.settings, ctx.identity, pinned, msg_id, clock=ctx.clock)
    except (ClientError, KeysError, RefusedError, OSError) as exc:
        return see_other(f"/sent/{msg_id}?error={quote(str(exc)[:300])}")
    await audit(request, "exported_evidence", message_id=msg_id)
    log.info("console: %s exported the evidence of message %s", request[SESSION].person, msg_id)
    return web.Response(
        body=data,
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="evidence-{msg_id}.json"'},
    )


# --- directory ----------------------------------------------------------------------------


ASK_RELAY_S = 3.0
"""A page waits at most this long for the relay (presence, policy), then says "unknown":
the console must answer while the relay is down or unreachable."""
SEND_ASK_RELAY_S = 5.0
"""Sending waits this long for the relay's first answer, then queues the notice in the
outbox (the daemon submits it when the relay answers again)."""
POLICY_CACHE_S = 300.0
"""The relay's escalation policy changes only with its configuration: asked again after
this long."""


async def _reachable(ctx: ConsoleContext) -> dict[str, bool]:
    """Who the relay can reach now; empty when it cannot be asked (shown as unknown)."""
    if ctx.presence is None:
        return {}
    try:
        async with asyncio.timeout(ASK_RELAY_S):
            return {p.id: p.reachable for p in (await ctx.presence()).authorities}
    except (ClientError, KeysError, OSError, TimeoutError):
        return {}


async def directory(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    current = ctx.directory()
    reachable = await _reachable(ctx)
    now = ctx.clock()
    rows = []
    for e in current.authorities if current is not None else []:
        if e.role == "relay":
            continue
        local = None
        if e.hours is not None:
            there = datetime.fromtimestamp(now / 1000, tz=ZoneInfo(e.hours.tz))
            local = there.strftime("%a %H:%M")
        rows.append({"e": e, "local": local, "reachable": reachable.get(e.id)})
    return page(
        request,
        "directory.html",
        rows=rows,
        version=current.version if current is not None else None,
    )


# --- compose ------------------------------------------------------------------------------


async def plan(ctx: ConsoleContext) -> list[wire.EscalationPolicy]:
    """The relay's escalation policy per priority (remembered for a while); empty when
    it cannot be asked."""
    if ctx.policy is None:
        return []
    held = ctx.cache.get("policy")
    now = time.monotonic()
    if held is not None and held[0] > now:
        return list(held[1])
    try:
        async with asyncio.timeout(ASK_RELAY_S):
            policies = list((await ctx.policy()).policies)
    except (ClientError, KeysError, OSError, TimeoutError):
        return []
    ctx.cache["policy"] = (now + POLICY_CACHE_S, policies)
    return policies


def _steps(policy: wire.EscalationPolicy, ack_ms: int | None) -> list[tuple[str, int]]:
    """(step name, delay after sending) as the relay would fix them: its own
    :func:`keys.lifecycle.schedule`, for a message accepted at time 0."""
    offsets = [
        (Step.REMIND, policy.remind_after_ms),
        (Step.RELEASE, policy.release_after_ms),
        (Step.NOTIFY, policy.notify_after_ms),
    ]
    planned = schedule(
        offsets,
        priority=policy.priority,
        accepted_at=0,
        ack_by=ack_ms,
        working_hours=policy.working_hours,
    )
    return [(STEP_NAMES[step], due) for step, due in planned.steps]


def duration(ms: int, units: dict[str, str]) -> str:
    """A delay as a person says it: "10 min", "2 h", "1 h 55 min", "3 d" (units named
    in the page's language; console.js says it the same way)."""
    if ms >= 86_400_000 and ms % 86_400_000 == 0:
        return f"{ms // 86_400_000} {units['d']}"
    minutes = max(1, round(ms / 60_000))
    hours, rest = divmod(minutes, 60)
    if hours and rest:
        return f"{hours} {units['h']} {rest} {units['min']}"
    return f"{hours} {units['h']}" if hours else f"{minutes} {units['min']}"


async def _compose_page(
    request: web.Request,
    kind: str,
    values: dict[str, str],
    chosen: dict[str, list[str]],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    ctx = request.app[CONTEXT]
    if kind not in FORMS:  # a form posted with no kind or an unknown one: the default
        kind = DEFAULT_KIND
    current = ctx.directory()
    reachable, policies = await asyncio.gather(_reachable(ctx), plan(ctx))
    query = request.query.get("q", "").strip().lower()
    authorities = []
    for e in current.authorities if current is not None else []:
        if e.role == "relay" or e.id == ctx.identity.id:
            continue
        text = f"{e.id} {e.name} {e.country}".lower()
        picked = e.id in chosen["to"] or e.id in chosen["fallback"]
        if query and query not in text and not picked:
            continue
        authorities.append(
            {
                "id": e.id,
                "name": e.name,
                "country": e.country,
                "reachable": reachable.get(e.id),
                "search": text,
            }
        )
    priority = values.get("priority", "urgent")
    ack_text = values.get("ack_minutes", "").strip()
    ack_minutes = _number(ack_text) if ack_text else None
    ack_ms = int(ack_minutes * 60_000) if ack_minutes is not None else None
    chosen_policy = next((p for p in policies if p.priority == priority), None)
    units = {"min": tr(request, N_("min")), "h": tr(request, N_("h")), "d": tr(request, N_("d"))}
    form = FORMS.get(kind)
    return page(
        request,
        "compose.html",
        status,
        forms=FORMS,
        form=form,
        kind=kind,
        values=values,
        chosen=chosen,
        errors=errors,
        authorities=authorities,
        query=request.query.get("q", ""),
        unreachable=[a for a in chosen["to"] if reachable.get(a) is False],
        policies_json=[p.model_dump(mode="json") for p in policies],
        units=units,
        steps=[(n, duration(d, units)) for n, d in _steps(chosen_policy, ack_ms)]
        if chosen_policy
        else [],
        working_hours=chosen_policy.working_hours if chosen_policy else False,
        rows={f.name: item_rows(f, values) for f in form.fields} if form else {},
        handling_codes=HANDLING_CODES,
    )


async def compose_form(request: web.Request) -> web.Response:
    kind = request.query.get("kind", DEFAULT_KIND)
    defaults = {"priority": "urgent", "expires_hours": "168", "ack_minutes": ""}
    return await _compose_page(
        request, kind, defaults, {"to": [], "fallback": [], "handling": []}, {}
    )


async def compose(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    form = await request.post()
    kind = str(form.get("kind", ""))
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    chosen = {
        k: [v for v in form.getall(k, []) if isinstance(v, str)]
        for k in ("to", "fallback", "handling")
    }
    photos = [v for v in form.getall("photo", []) if isinstance(v, web.FileField) and v.filename]
    notice, errors = read_form(
        kind, values, [_safe_name(p.filename) for p in photos], lambda t: tr(request, t)
    )
    if not chosen["to"]:
        errors["to"] = tr(request, N_("Choose at least one recipient."))
    priority = values.get("priority", "urgent")
    if priority not in get_args(Priority):
        errors["priority"] = tr(request, N_("Choose a priority."))
    hours = _number(values.get("expires_hours") or "168")
    ack_text = values.get("ack_minutes", "").strip()
    minutes = _number(ack_text) if ack_text else None
    ttl_ms = int(hours * 3_600_000) if hours is not None else 0
    ack_ms = int(minutes * 60_000) if minutes is not None else None
    if ttl_ms <= 0 or (ack_text and (ack_ms is None or not 0 < ack_ms <= ttl_ms)):
        errors["expires_hours"] = tr(
            request, N_("Give hours (and minutes to acknowledge within them).")
        )
        ttl_ms, ack_ms = 0, None
    if errors or notice is None:
        return await _compose_page(request, kind, values, chosen, errors, 400)
    spool = ctx.settings.data_dir / "console-uploads" / secrets.token_hex(8)
    try:
        paths = await asyncio.to_thread(_save_uploads, spool, photos)
        out = Outgoing(
            to=tuple(chosen["to"]),
            fallback=tuple(f for f in chosen["fallback"] if f not in chosen["to"]),
            priority=priority,  # type: ignore[arg-type]  # checked above
            ttl_ms=ttl_ms,
            ack_within_ms=ack_ms,
            handling=tuple(chosen["handling"]),
            attachments=tuple(paths),
            content=notice.model_dump(mode="json", exclude_none=True),
            notice=notice,
        )
        pinned = await asyncio.to_thread(PinnedDirectory.load, ctx.settings)
        result = await send(
            ctx.settings,
            ctx.identity,
            pinned,
            out,
            clock=ctx.clock,
            refresh_timeout_s=SEND_ASK_RELAY_S,
        )
    except (ClientError, KeysError, RefusedError, InboxError, OSError) as exc:
        errors["kind"] = str(exc)[:300]
        return await _compose_page(request, kind, values, chosen, errors, 400)
    finally:
        await asyncio.to_thread(shutil.rmtree, spool, True)
    detail = f"{kind} to {', '.join(out.to)}" + (
        f", fallback {', '.join(out.fallback)}" if out.fallback else ""
    )
    await audit(request, "sent", message_id=result.sealed.id, detail=detail)
    log.info(
        "console: %s sent message %s (%s)", request[SESSION].person, result.sealed.id, result.state
    )
    return see_other(f"/sent/{result.sealed.id}?sent={result.state}")


def _number(text: str) -> float | None:
    """A number a person typed ("48", "1.5"), or None: not a number, not finite, or
    beyond any delay this form takes (a thousand years)."""
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        return None
    return value if math.isfinite(value) and abs(value) < 1e7 else None


def _safe_name(name: str) -> str:
    base = Path(name).name.strip() or "photo"
    return "".join(c if c.isalnum() or c in "._- " else "_" for c in base)[:120]


def _save_uploads(folder: Path, photos: list[web.FileField]) -> list[Path]:
    if not photos:
        return []
    private_dir(folder)
    out = []
    for p in photos:
        target = folder / _safe_name(p.filename)
        with open_private(target) as fh:
            shutil.copyfileobj(p.file, fh)
        out.append(target)
    return out
