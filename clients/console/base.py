"""What every page of the console shares: its context, templates, languages and answers.

:class:`ConsoleContext` is what the daemon hands the console (settings, identity, inbox,
clock, the pinned directory, a way to ask the relay). :func:`page` renders a template in
the request's language; :func:`problem` an error page; :func:`audit` records what a
signed-in person did in the inbox's audit trail.
"""

from __future__ import annotations

import gettext
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

from clients.config import ClientSettings
from clients.console.i18n import DEFAULT, LANGUAGES, catalogues
from clients.console.sessions import Session, Sessions
from clients.console.users import Attempts
from clients.decisions import Decision, decide
from clients.errors import ClientError
from clients.store import AuditAction, Inbox, InboxError
from keys import wire
from keys.directory import Directory
from keys.errors import KeysError
from keys.identity import Identity

__all__ = [
    "ATTEMPTS",
    "CONTEXT",
    "CSP",
    "LANG",
    "SESSION",
    "SESSIONS",
    "STATIC",
    "TEMPLATES",
    "ConsoleContext",
    "audit",
    "load",
    "origin",
    "page",
    "problem",
    "see_other",
    "tr",
]

log = logging.getLogger("clients.console")
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
    "img-src 'self' blob:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
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
    policy: Callable[[], Awaitable[wire.PolicyList]] | None = None
    """The relay's escalation policy per priority (None: no relay connection to ask)."""
    cache: dict[str, Any] = field(default_factory=dict)
    """What pages remember between requests (the relay's policy)."""


CONTEXT = web.AppKey("console_context", ConsoleContext)
SESSIONS = web.AppKey("console_sessions", Sessions)
ATTEMPTS = web.AppKey("console_attempts", Attempts)
TEMPLATES = web.AppKey("console_templates", dict)
"""Language code -> the Jinja2 environment with that language's translations."""
STATIC = web.AppKey("console_static", dict)
SESSION = web.RequestKey("console_session", Session)
LANG = web.RequestKey("console_lang", str)
TRANSLATIONS = web.AppKey("console_translations", dict)
_NUMBERED = re.compile(r"^(.*\S) (\d+)$")


def _when(ms: int | None) -> Markup:
    """UTC as text, in a ``<time>`` the page's script adds the viewer's local time to."""
    if ms is None:
        return Markup("—")
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return Markup('<time datetime="{}">{}</time>').format(
        moment.isoformat(timespec="seconds"), moment.strftime("%Y-%m-%d %H:%M UTC")
    )


def _plain(translations: gettext.NullTranslations) -> Callable[[object], str]:
    """A filter translating a text that is not the template's own (a label from a model,
    an error message): the result stays plain text, so autoescaping still applies."""

    def t(text: object) -> str:
        if not isinstance(text, str) or not text:
            return "" if text is None else str(text)
        numbered = _NUMBERED.match(text)  # "Measure 2": the label, then its number
        if numbered and translations.gettext(numbered.group(1)) != numbered.group(1):
            return f"{translations.gettext(numbered.group(1))} {numbered.group(2)}"
        return translations.gettext(text)

    return t


def load() -> tuple[
    dict[str, jinja2.Environment], dict[str, gettext.NullTranslations], dict[str, bytes]
]:
    """The templates once per language, the translations, and the static files."""
    files = resources.files("clients.console")
    sources = {
        t.name: t.read_text(encoding="utf-8")
        for t in files.joinpath("templates").iterdir()
        if t.name.endswith(".html")
    }
    translations = catalogues()
    envs = {}
    for code, trans in translations.items():
        env = jinja2.Environment(
            loader=jinja2.DictLoader(sources),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.i18n"],
        )
        env.policies["ext.i18n.trimmed"] = True  # as extracted (i18n.extracted_messages)
        env.install_gettext_translations(trans, newstyle=True)  # type: ignore[attr-defined]
        env.filters["when"] = _when
        env.filters["t"] = _plain(trans)
        env.globals["languages"] = LANGUAGES
        env.globals["lang"] = code
        envs[code] = env
    static = {f.name: f.read_bytes() for f in files.joinpath("static").iterdir() if "." in f.name}
    return envs, translations, static


def tr(request: web.Request, text: str, **values: object) -> str:
    """``text`` (an English message id) in the request's language, ``%(name)s`` filled."""
    translations = request.app[TRANSLATIONS][request.get(LANG, DEFAULT)]
    out: str = translations.gettext(text)
    return out % values if values else out


def page(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    session: Session | None = request.get(SESSION)
    body = (
        request.app[TEMPLATES][request.get(LANG, DEFAULT)]
        .get_template(template)
        .render(
            authority=request.app[CONTEXT].identity.id,
            person=session.person if session else None,
            csrf=session.csrf if session else "",
            here=request.path_qs,
            **values,
        )
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def problem(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    """An error page; ``title`` and ``detail`` are English message ids (or plain text)."""
    return page(request, "problem.html", status, title=title, detail=detail)


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def origin(request: web.Request) -> str:
    """How an action came, for the audit trail's detail."""
    return f"console, from {request.remote}"


async def audit(
    request: web.Request,
    action: AuditAction,
    *,
    person: str | None = None,
    message_id: str | None = None,
    detail: str = "",
) -> None:
    """Record in the audit trail what the signed-in person (or ``person``) did. A failure
    to record is logged, never shown as the action failing."""
    ctx = request.app[CONTEXT]
    session: Session | None = request.get(SESSION)
    who = person if person is not None else session.person if session else "?"
    try:
        await ctx.inbox.audit.record(
            person=who[:200] or "?",
            action=action,
            at=ctx.clock(),
            message_id=message_id,
            detail=origin(request) + (f": {detail}" if detail else ""),
        )
    except (InboxError, ClientError, KeysError) as exc:
        log.error("console: could not record %s by %s in the audit trail: %s", action, who, exc)
