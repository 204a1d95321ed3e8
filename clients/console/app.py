"""The officer console's web application (aiohttp, Jinja2 templates, package data).

This module is the frame: sign-in (one-time link or password), sign-out, the language
switch, static files, and the middleware every request passes: it finds the session,
picks the page's language, refuses a POST from elsewhere (Origin/Referer) or without
the session's CSRF token, and gives every answer a strict Content-Security-Policy
(scripts only the console's own, no external asset, no framing), ``no-store`` and
``nosniff``. The pages are in :mod:`clients.console.received` (inbox, message,
decisions, live stream) and :mod:`clients.console.outgoing` (compose, sent, directory).
"""

from __future__ import annotations

import asyncio
import mimetypes
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from clients.console import outgoing, received
from clients.console.base import (
    ATTEMPTS,
    CONTEXT,
    CSP,
    LANG,
    SESSION,
    SESSIONS,
    STATIC,
    TEMPLATES,
    TRANSLATIONS,
    ConsoleContext,
    audit,
    load,
    log,
    page,
    problem,
    see_other,
    tr,
)
from clients.console.i18n import LANGUAGES, N_, choose
from clients.console.sessions import Session, Sessions
from clients.console.users import Attempts, password_ok

__all__ = ["ConsoleContext", "console_app", "serve_console"]

COOKIE = "cpar_console"
LANG_COOKIE = "cpar_lang"
MAX_FORM_BYTES = 32 * 1024 * 1024
"""The largest form (photos included) the console takes."""
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=2,p=1$SdgTn/1Y31mxBzzH7Fi2Uw$"
    "0NlzXkt68HftwFrornfkqXX5/YVtbMm0avfxTsC2y4I"
)
"""Checked against when the name is unknown, so the answer takes as long."""


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    path = request.path
    public = path.startswith(("/login", "/static/", "/language/")) or path == "/favicon.ico"
    request[LANG] = choose(request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language"))
    session = request.app[SESSIONS].get(request.cookies.get(COOKIE))
    if session is not None:
        request[SESSION] = session
    if not public and session is None:
        response: web.StreamResponse = problem(
            request,
            401,
            N_("Sign in first"),
            N_("Open the one-time sign-in link the daemon printed in its log."),
        )
    elif request.method == "POST" and not _same_origin(request):
        response = problem(
            request, 403, N_("Refused"), N_("This form did not come from the console.")
        )
    elif request.method == "POST" and path != "/login" and not await _csrf_ok(request, session):
        response = problem(
            request, 403, N_("Refused"), N_("The form's security token is missing or wrong.")
        )
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = problem(request, exc.status, exc.reason, exc.text or exc.reason)
    if response.prepared:  # a stream (events) set its own headers before it started
        return response
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on
    # form posts, and the same-origin check could not tell the console from elsewhere.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Language"] = request[LANG]
    return response


async def _csrf_ok(request: web.Request, session: Session | None) -> bool:
    sent = (await request.post()).get("csrf")
    return session is not None and Sessions.csrf_ok(
        session, sent if isinstance(sent, str) else None
    )


def _same_origin(request: web.Request) -> bool:
    """A POST must come from a page of this console (Origin, else Referer, when sent)."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if origin is None:
        return True  # a non-browser client; the CSRF token still has to match
    own = f"{request.scheme}://{request.host}"
    return origin == own or origin.startswith(own + "/")


# --- pages ----------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.StreamResponse:
    """The one-time link: a form asking for the person's name, or, when the daemon is
    configured with ``console_link_person`` (the demo), that person signed in at once."""
    token = request.match_info["token"]
    if not request.app[SESSIONS].link_ok(token):
        return problem(
            request,
            403,
            N_("This sign-in link cannot be used"),
            N_("It was used already or is wrong. The daemon logs a new one-time link."),
        )
    person = request.app[CONTEXT].settings.console_link_person
    if person is not None:
        made = request.app[SESSIONS].sign_in(token, person)
        if made is not None:
            return await _signed_in(request, made[0], person, "one-time link")
    return page(request, "login.html", token=token, error=None)


async def password_form(request: web.Request) -> web.Response:
    if not request.app[CONTEXT].settings.console_users:
        return problem(
            request,
            401,
            N_("Sign in with a link"),
            N_(
                "No console passwords are set up here: open the one-time sign-in link the "
                "daemon printed (or add people with 'notice console user add')."
            ),
        )
    return page(request, "password.html", error=None, name="")


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if "token" not in form:
        return await _password_login(
            request, str(form.get("name", "")), str(form.get("password", ""))
        )
    token, person = str(form.get("token", "")), str(form.get("person", "")).strip()
    if not 1 <= len(person) <= 200:
        if not request.app[SESSIONS].link_ok(token):
            return problem(
                request, 403, N_("This sign-in link cannot be used"), N_("Ask for a new one.")
            )
        return page(
            request,
            "login.html",
            400,
            token=token,
            error=tr(request, N_("Enter your name (1 to 200 characters).")),
        )
    made = request.app[SESSIONS].sign_in(token, person)
    if made is None:
        return problem(
            request,
            403,
            N_("This sign-in link cannot be used"),
            N_("It was used already or is wrong."),
        )
    return await _signed_in(request, made[0], person, "one-time link")


async def _password_login(request: web.Request, name: str, password: str) -> web.StreamResponse:
    users = {u.name: u.password_hash for u in request.app[CONTEXT].settings.console_users}
    attempts = request.app[ATTEMPTS]
    keys = (f"name:{name}", f"addr:{request.remote}")
    wait = attempts.blocked(*keys)
    if wait > 0:
        log.warning("console: sign-in for %r refused: too many failed attempts", name[:64])
        response = page(
            request,
            "password.html",
            429,
            name=name,
            error=tr(
                request,
                N_("Too many failed attempts: try again in %(seconds)s s."),
                seconds=int(wait) + 1,
            ),
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    # An unknown name costs the same work as a known one (no way to tell them apart).
    stored = users.get(name, _DUMMY_HASH)
    ok = await asyncio.to_thread(password_ok, stored, password) and name in users
    if not ok:
        attempts.failed(*keys)
        log.warning("console: failed sign-in for %r", name[:64])
        await audit(request, "sign_in_failed", person=name[:200] or "?", detail="password")
        return page(
            request,
            "password.html",
            401,
            name=name,
            error=tr(request, N_("Wrong name or password.")),
        )
    attempts.succeeded(*keys)
    cookie, _ = request.app[SESSIONS].open(name)
    return await _signed_in(request, cookie, name, "password")


async def _signed_in(request: web.Request, cookie: str, person: str, how: str) -> web.Response:
    log.info("console: %s signed in", person)
    await audit(request, "signed_in", person=person, detail=how)
    response = see_other("/")
    response.set_cookie(
        COOKIE, cookie, httponly=True, samesite="Strict", secure=request.secure, path="/"
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    await audit(request, "signed_out")
    request.app[SESSIONS].sign_out(request.cookies.get(COOKIE))
    response = see_other("/login")
    response.del_cookie(COOKIE, path="/")
    return response


async def language(request: web.Request) -> web.StreamResponse:
    """Switch the pages' language (a cookie; no session needed) and go back."""
    code = request.match_info["code"]
    back = request.query.get("next", "/")
    if urlsplit(back).netloc or not back.startswith("/") or back.startswith("//") or "\\" in back:
        back = "/"  # only a page of this console
    if code not in LANGUAGES:
        raise web.HTTPNotFound(reason="Not found", text="Not found.")
    response = see_other(back)
    response.set_cookie(
        LANG_COOKIE,
        code,
        max_age=365 * 86400,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
    )
    return response


async def _no_icon(request: web.Request) -> web.Response:
    """Browsers ask for one; there is none (a 204 instead of a logged 404)."""
    return web.Response(status=204)


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
    envs, translations, files = load()
    app[TEMPLATES] = envs
    app[TRANSLATIONS] = translations
    app[STATIC] = files
    app.router.add_get("/login", password_form)
    app.router.add_get("/login/{token}", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/language/{code}", language)
    app.router.add_get("/", received.inbox)
    app.router.add_get("/events", received.events)
    app.router.add_get("/messages/{id}", received.message)
    app.router.add_get("/messages/{id}/files/{name}", received.attachment)
    app.router.add_post("/messages/{id}/acknowledge", received.acknowledge)
    app.router.add_post("/messages/{id}/reject", received.reject)
    app.router.add_get("/sent", outgoing.sent)
    app.router.add_get("/sent/{id}", outgoing.sent_one)
    app.router.add_get("/sent/{id}/evidence", outgoing.evidence)
    app.router.add_get("/directory", outgoing.directory)
    app.router.add_get("/compose", outgoing.compose_form)
    app.router.add_post("/compose", outgoing.compose)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/favicon.ico", _no_icon)
    return app


async def serve_console(
    ctx: ConsoleContext,
    host: str,
    port: int,
    *,
    on_link: Callable[[str], None],
    ssl_context: ssl.SSLContext | None = None,
) -> web.AppRunner:
    """Start the console on ``host:port`` (HTTPS when ``ssl_context`` is given). ``on_link``
    gets the one-time sign-in URL at start and a new one each time one is used. The caller
    cleans the runner up."""
    where: list[str] = []

    def announce(token: str) -> None:
        if where:
            on_link(f"{where[0]}/login/{token}")

    app = await asyncio.to_thread(console_app, ctx, on_new_link=announce)
    # An open live stream must not hold the daemon's shutdown for long.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    scheme = "https" if ssl_context is not None else "http"
    where.append(f"{scheme}://{shown}:{bound_port}")
    app[SESSIONS].new_link()
    return runner
