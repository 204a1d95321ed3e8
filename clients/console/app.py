"""The officer console's web application (aiohttp, Jinja2 templates, package data).

Pages: the inbox (sorted by urgency: priority, then overdue), a message (handling
restrictions first, the notice laid out by kind, photos decrypted locally and shown
inline, attachments to download, acknowledge / reject), sign-in and sign-out. Every
answer carries a strict Content-Security-Policy (no script, no external asset, no
framing), ``no-store`` and ``nosniff``; every POST checks the session's CSRF token and
that the request comes from the console's own origin.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import secrets
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web
from markupsafe import Markup

from clients.config import ClientSettings
from clients.console.compose import FORMS, read_form
from clients.console.sessions import Session, Sessions
from clients.console.users import Attempts, password_ok
from clients.decisions import Decision, DecisionStatus, decide
from clients.directory import PinnedDirectory
from clients.errors import ClientError
from clients.evidence import export_evidence
from clients.kinds import HANDLING_CODES, describe, describe_handling
from clients.refusal import RefusedError
from clients.sender import Outgoing, send
from clients.store import Inbox, InboxError, InboxMessage
from keys import wire
from keys.directory import Directory
from keys.encoding import is_uuid7
from keys.errors import KeysError
from keys.files import open_private, private_dir
from keys.identity import Identity

__all__ = ["ConsoleContext", "console_app", "serve_console"]

log = logging.getLogger(__name__)
COOKIE = "cpar_console"
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
MAX_FORM_BYTES = 32 * 1024 * 1024
"""The largest form (photos included) the console takes."""
LIVE_POLL_S = 1.0
"""How often the live stream looks at the inbox for a change."""
PRIORITY_RANK = {"urgent": 0, "high": 1, "routine": 2}
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=2,p=1$SdgTn/1Y31mxBzzH7Fi2Uw$"
    "0NlzXkt68HftwFrornfkqXX5/YVtbMm0avfxTsC2y4I"
)
"""Checked against when the name is unknown, so the answer takes as long."""
Decide = Callable[..., Awaitable[Decision]]


@dataclass
class ConsoleContext:
    settings: ClientSettings
    identity: Identity
    inbox: Inbox
    clock: Callable[[], int]
    decide: Decide = decide
    directory: Callable[[], Directory | None] = lambda: None
    """The pinned directory the daemon uses (None: not pinned yet)."""
    presence: Callable[[], Awaitable[wire.PresenceList]] | None = None
    """Who the relay can reach now (None: no relay connection to ask)."""


CONTEXT = web.AppKey("console_context", ConsoleContext)
SESSIONS = web.AppKey("console_sessions", Sessions)
ATTEMPTS = web.AppKey("console_attempts", Attempts)
TEMPLATES = web.AppKey("console_templates", jinja2.Environment)
STATIC = web.AppKey("console_static", dict)
SESSION = web.RequestKey("console_session", Session)


def _when(ms: int | None) -> Markup:
    """UTC as text, in a ``<time>`` the page's script adds the viewer's local time to."""
    if ms is None:
        return Markup("—")
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return Markup('<time datetime="{}">{}</time>').format(
        moment.isoformat(timespec="seconds"), moment.strftime("%Y-%m-%d %H:%M UTC")
    )


def _load() -> tuple[jinja2.Environment, dict[str, bytes]]:
    files = resources.files("clients.console")
    env = jinja2.Environment(
        loader=jinja2.DictLoader(
            {
                t.name: t.read_text(encoding="utf-8")
                for t in files.joinpath("templates").iterdir()
                if t.name.endswith(".html")
            }
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    static = {f.name: f.read_bytes() for f in files.joinpath("static").iterdir() if "." in f.name}
    return env, static


def _page(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    session: Session | None = request.get(SESSION)
    body = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            authority=request.app[CONTEXT].identity.id,
            person=session.person if session else None,
            csrf=session.csrf if session else "",
            **values,
        )
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _problem(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    return _page(request, "problem.html", status, title=title, detail=detail)


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    path = request.path
    public = path.startswith(("/login", "/static/")) or path == "/favicon.ico"
    session = request.app[SESSIONS].get(request.cookies.get(COOKIE))
    if session is not None:
        request[SESSION] = session
    if not public and session is None:
        response: web.StreamResponse = _problem(
            request,
            401,
            "Sign in first",
            "Open the one-time sign-in link the daemon printed in its log.",
        )
    elif request.method == "POST" and not _same_origin(request):
        response = _problem(request, 403, "Refused", "This form did not come from the console.")
    elif request.method == "POST" and path != "/login" and not await _csrf_ok(request, session):
        response = _problem(
            request, 403, "Refused", "The form's security token is missing or wrong."
        )
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _problem(request, exc.status, exc.reason, exc.text or exc.reason)
    if response.prepared:  # a stream (events) set its own headers before it started
        return response
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on
    # form posts, and the same-origin check could not tell the console from elsewhere.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


async def _csrf_ok(request: web.Request, session: Session | None) -> bool:
    sent = (await request.post()).get("csrf")
    return session is not None and Sessions.csrf_ok(
        session, sent if isinstance(sent, str) else None
    )


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _same_origin(request: web.Request) -> bool:
    """A POST must come from a page of this console (Origin, else Referer, when sent)."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if origin is None:
        return True  # a non-browser client; the CSRF token still has to match
    own = f"{request.scheme}://{request.host}"
    return origin == own or origin.startswith(own + "/")


# --- pages ----------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    if not request.app[SESSIONS].link_ok(token):
        return _problem(
            request,
            403,
            "This sign-in link cannot be used",
            "It was used already or is wrong. The daemon logs a new one-time link.",
        )
    return _page(request, "login.html", token=token, error=None)


async def password_form(request: web.Request) -> web.Response:
    if not request.app[CONTEXT].settings.console_users:
        return _problem(
            request,
            401,
            "Sign in with a link",
            "No console passwords are set up here: open the one-time sign-in link the "
            "daemon printed (or add people with 'notice console user add').",
        )
    return _page(request, "password.html", error=None, name="")


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if "token" not in form:
        return await _password_login(
            request, str(form.get("name", "")), str(form.get("password", ""))
        )
    token, person = str(form.get("token", "")), str(form.get("person", "")).strip()
    if not 1 <= len(person) <= 200:
        if not request.app[SESSIONS].link_ok(token):
            return _problem(request, 403, "This sign-in link cannot be used", "Ask for a new one.")
        return _page(
            request, "login.html", 400, token=token, error="Enter your name (1 to 200 characters)."
        )
    made = request.app[SESSIONS].sign_in(token, person)
    if made is None:
        return _problem(
            request, 403, "This sign-in link cannot be used", "It was used already or is wrong."
        )
    return _signed_in(request, made[0], person)


async def _password_login(request: web.Request, name: str, password: str) -> web.StreamResponse:
    users = {u.name: u.password_hash for u in request.app[CONTEXT].settings.console_users}
    attempts = request.app[ATTEMPTS]
    keys = (f"name:{name}", f"addr:{request.remote}")
    wait = attempts.blocked(*keys)
    if wait > 0:
        log.warning("console: sign-in for %r refused: too many failed attempts", name[:64])
        response = _page(
            request,
            "password.html",
            429,
            name=name,
            error=f"Too many failed attempts: try again in {int(wait) + 1} s.",
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    # An unknown name costs the same work as a known one (no way to tell them apart).
    stored = users.get(name, _DUMMY_HASH)
    ok = await asyncio.to_thread(password_ok, stored, password) and name in users
    if not ok:
        attempts.failed(*keys)
        log.warning("console: failed sign-in for %r", name[:64])
        return _page(request, "password.html", 401, name=name, error="Wrong name or password.")
    attempts.succeeded(*keys)
    cookie, _ = request.app[SESSIONS].open(name)
    return _signed_in(request, cookie, name)


def _signed_in(request: web.Request, cookie: str, person: str) -> web.Response:
    log.info("console: %s signed in", person)
    response = _see_other("/")
    response.set_cookie(
        COOKIE, cookie, httponly=True, samesite="Strict", secure=request.secure, path="/"
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    request.app[SESSIONS].sign_out(request.cookies.get(COOKIE))
    response = _see_other("/login")
    response.del_cookie(COOKIE, path="/")
    return response


def _overdue(m: InboxMessage, now: int) -> bool:
    return m.state == "new" and m.ack_by is not None and m.ack_by < now


async def inbox(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    now = ctx.clock()
    messages = await ctx.inbox.received.list(limit=500)
    messages.sort(
        key=lambda m: (
            m.state != "new",
            not _overdue(m, now),
            PRIORITY_RANK.get(m.priority, 9),
            -m.received_at,
        )
    )
    rows = [
        {
            "m": m,
            "overdue": _overdue(m, now),
            "title": _title(m),
        }
        for m in messages
    ]
    return _page(request, "inbox.html", rows=rows, now=now)


def _title(m: InboxMessage) -> str:
    notice = m.notice
    if notice is None:
        return m.kind or "message"
    rows = describe(notice)
    return f"{rows[0][1]}: {rows[1][1]}" if len(rows) > 1 else rows[0][1]


async def _inbox_state(inbox_: Inbox) -> tuple[object, ...]:
    g = await inbox_.gauges()
    newest = await inbox_.received.list(limit=1)
    return (g.unhandled, newest[0].id if newest else None, g.decisions_pending)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``inbox`` whenever the inbox changes (a new message, a
    decision), so the page updates without a reload (static/console.js)."""
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
    last = await _inbox_state(inbox_)
    await response.write(b"retry: 3000\nevent: ready\ndata: {}\n\n")
    try:
        while True:
            await asyncio.sleep(LIVE_POLL_S)
            now = await _inbox_state(inbox_)
            if now != last:
                last = now
                await response.write(b"event: inbox\ndata: {}\n\n")
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
        raise web.HTTPNotFound(reason="No such message", text="There is no such message here.")
    return found


async def message(request: web.Request) -> web.Response:
    m = await _message(request)
    notice = m.notice
    files = []
    inbox_ = request.app[CONTEXT].inbox
    for a in m.attachments:
        path = inbox_.attachment_path(m.id, a.name)
        here = await asyncio.to_thread(path.is_file)
        files.append({"a": a, "here": here, "image": a.type.startswith("image/")})
    return _page(
        request,
        "message.html",
        m=m,
        rows=describe(notice) if notice is not None else [("Content", str(m.content))],
        handling=describe_handling(m.handling),
        files=files,
        overdue=_overdue(m, request.app[CONTEXT].clock()),
        notice_ok=notice is not None,
        error=request.query.get("error"),
    )


async def attachment(request: web.Request) -> web.StreamResponse:
    m = await _message(request)
    name = request.match_info["name"]
    entry = next((a for a in m.attachments if a.name == name), None)
    if entry is None:
        raise web.HTTPNotFound(reason="No such attachment", text="No such attachment.")
    path = request.app[CONTEXT].inbox.attachment_path(m.id, name)
    if not await asyncio.to_thread(path.is_file):
        raise web.HTTPNotFound(reason="Not downloaded yet", text="Not downloaded yet.")
    image = entry.type in ("image/jpeg", "image/png", "image/gif", "image/webp")
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
            return _see_other(f"/messages/{m.id}?error=Give+a+reason+to+reject")
        kwargs = {"reason": reason}
    try:
        await ctx.decide(
            ctx.settings,
            ctx.identity,
            ctx.inbox.path,
            m.id,
            status,
            clock=ctx.clock,
            **kwargs,
        )
    except (RefusedError, InboxError, KeysError) as exc:
        return _see_other(f"/messages/{m.id}?error={quote(str(exc)[:300])}")
    log.info("console: %s %s message %s", session.person, status, m.id)
    return _see_other(f"/messages/{m.id}")


async def acknowledge(request: web.Request) -> web.StreamResponse:
    return await _decide(request, "acknowledged")


async def reject(request: web.Request) -> web.StreamResponse:
    return await _decide(request, "rejected")


# --- sent -------------------------------------------------------------------------------


async def sent(request: web.Request) -> web.Response:
    rows = await request.app[CONTEXT].inbox.sent.list(limit=500)
    return _page(request, "sent.html", rows=rows)


async def sent_one(request: web.Request) -> web.Response:
    msg_id = request.match_info["id"]
    inbox_ = request.app[CONTEXT].inbox
    found = await inbox_.sent.get(msg_id) if is_uuid7(msg_id) else None
    if found is None:
        raise web.HTTPNotFound(reason="No such message", text="You sent no such message.")
    timeline = await inbox_.sent.timeline(msg_id)
    return _page(
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
        raise web.HTTPNotFound(reason="No such message", text="You sent no such message.")
    try:
        pinned = await asyncio.to_thread(PinnedDirectory.load, ctx.settings)
        data, _ = await export_evidence(ctx.settings, ctx.identity, pinned, msg_id, clock=ctx.clock)
    except (ClientError, KeysError, RefusedError, OSError) as exc:
        return _see_other(f"/sent/{msg_id}?error={quote(str(exc)[:300])}")
    log.info("console: %s exported the evidence of message %s", request[SESSION].person, msg_id)
    return web.Response(
        body=data,
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="evidence-{msg_id}.json"'},
    )


# --- directory ----------------------------------------------------------------------------


async def _reachable(ctx: ConsoleContext) -> dict[str, bool]:
    """Who the relay can reach now; empty when it cannot be asked (shown as unknown)."""
    if ctx.presence is None:
        return {}
    try:
        return {p.id: p.reachable for p in (await ctx.presence()).authorities}
    except (ClientError, KeysError, OSError):
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
    return _page(
        request,
        "directory.html",
        rows=rows,
        version=current.version if current is not None else None,
    )


# --- compose ------------------------------------------------------------------------------


async def _compose_page(
    request: web.Request,
    kind: str,
    values: dict[str, str],
    chosen: dict[str, list[str]],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    ctx = request.app[CONTEXT]
    current = ctx.directory()
    reachable = await _reachable(ctx)
    authorities = [
        {"id": e.id, "name": e.name, "country": e.country, "reachable": reachable.get(e.id)}
        for e in (current.authorities if current is not None else [])
        if e.role != "relay" and e.id != ctx.identity.id
    ]
    return _page(
        request,
        "compose.html",
        status,
        forms=FORMS,
        form=FORMS.get(kind),
        kind=kind,
        values=values,
        chosen=chosen,
        errors=errors,
        authorities=authorities,
        handling_codes=HANDLING_CODES,
    )


async def compose_form(request: web.Request) -> web.Response:
    kind = request.query.get("kind", "identification_notice")
    if kind not in FORMS:
        kind = "identification_notice"
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
    notice, errors = read_form(kind, values, [_safe_name(p.filename) for p in photos])
    if not chosen["to"]:
        errors["to"] = "Choose at least one recipient."
    priority = values.get("priority", "urgent")
    if priority not in PRIORITY_RANK:
        errors["priority"] = "Choose a priority."
    try:
        ttl_ms = int(float(values.get("expires_hours") or "168") * 3_600_000)
        ack_text = values.get("ack_minutes", "").strip()
        ack_ms = int(float(ack_text) * 60_000) if ack_text else None
        if ttl_ms <= 0 or (ack_ms is not None and not 0 < ack_ms <= ttl_ms):
            raise ValueError
    except ValueError:
        errors["expires_hours"] = "Give hours (and minutes to acknowledge within them)."
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
        result = await send(ctx.settings, ctx.identity, pinned, out, clock=ctx.clock)
    except (ClientError, KeysError, RefusedError, InboxError, OSError) as exc:
        errors["kind"] = str(exc)[:300]
        return await _compose_page(request, kind, values, chosen, errors, 400)
    finally:
        await asyncio.to_thread(shutil.rmtree, spool, True)
    log.info(
        "console: %s sent message %s (%s)", request[SESSION].person, result.sealed.id, result.state
    )
    return _see_other(f"/sent/{result.sealed.id}?sent={result.state}")


async def _no_icon(request: web.Request) -> web.Response:
    """Browsers ask for one; there is none (a 204 instead of a logged 404)."""
    return web.Response(status=204)


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


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = request.app[STATIC].get(name)
    if body is None:
        raise web.HTTPNotFound(reason="Not found", text="Not found.")
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return web.Response(body=body, content_type=kind)


def console_app(ctx: ConsoleContext, *, on_new_link: Callable[[str], None]) -> web.Application:
    app = web.Application(middlewares=[_guard], client_max_size=MAX_FORM_BYTES)
    app[CONTEXT] = ctx
    app[SESSIONS] = Sessions(on_new_link=on_new_link)
    app[ATTEMPTS] = Attempts()
    env, files = _load()
    app[TEMPLATES] = env
    app[STATIC] = files
    app.router.add_get("/login", password_form)
    app.router.add_get("/login/{token}", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", inbox)
    app.router.add_get("/events", events)
    app.router.add_get("/messages/{id}", message)
    app.router.add_get("/messages/{id}/files/{name}", attachment)
    app.router.add_post("/messages/{id}/acknowledge", acknowledge)
    app.router.add_post("/messages/{id}/reject", reject)
    app.router.add_get("/sent", sent)
    app.router.add_get("/sent/{id}", sent_one)
    app.router.add_get("/sent/{id}/evidence", evidence)
    app.router.add_get("/directory", directory)
    app.router.add_get("/compose", compose_form)
    app.router.add_post("/compose", compose)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/favicon.ico", _no_icon)
    return app


async def serve_console(
    ctx: ConsoleContext, host: str, port: int, *, on_link: Callable[[str], None]
) -> web.AppRunner:
    """Start the console on ``host:port``. ``on_link`` gets the one-time sign-in URL at
    start and a new one each time one is used. The caller cleans the runner up."""
    where: list[str] = []

    def announce(token: str) -> None:
        if where:
            on_link(f"{where[0]}/login/{token}")

    app = await asyncio.to_thread(console_app, ctx, on_new_link=announce)
    # An open live stream must not hold the daemon's shutdown for long.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    where.append(f"http://{shown}:{bound_port}")
    app[SESSIONS].new_link()
    return runner
