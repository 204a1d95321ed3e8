"""The email hook's delivery: one message over SMTP, with STARTTLS and authentication.

:func:`send_mail` submits one mail with :mod:`aiosmtplib` (asyncio; no thread per
mail). The password comes from a file or an environment variable, read at each
attempt, never from the configuration itself. :func:`mail_body` writes the body from a
hook payload: metadata only, unless the caller allows the content (the hook says
``include_content`` and the message's handling codes allow onward sharing).

Errors are raised as :class:`MailError` with a message that is safe to log: the SMTP
reply code and the error class, never the server's text (which may echo the mail).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib

__all__ = ["MailError", "mail_body", "read_password", "send_mail"]


class MailError(Exception):
    """One attempt to send a mail failed. The message is safe to log."""


def _when(ms: Any) -> str:
    if not isinstance(ms, int):
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def mail_body(payload: Mapping[str, Any], *, content: bool, withheld: str | None = None) -> str:
    """The plain-text body for a hook payload: metadata lines, then the content if allowed."""
    lines = [
        f"Event:      {payload.get('event', 'received')}",
        f"Message:    {payload.get('id')}",
    ]
    if payload.get("sender"):
        lines.append(f"From:       {payload['sender']}")
    if payload.get("to"):
        lines.append(f"To:         {', '.join(map(str, payload['to']))}")
    if payload.get("priority"):
        lines.append(f"Priority:   {payload['priority']}")
    if payload.get("ack_by") is not None:
        lines.append(f"Ack by:     {_when(payload['ack_by'])}")
    details = payload.get("details")
    if isinstance(details, Mapping):
        for key in ("as", "note", "reason", "person", "step"):
            if details.get(key) is not None:
                lines.append(f"{key.capitalize() + ':':<11} {details[key]}")
    handling = payload.get("handling") or []
    if handling:
        codes = ", ".join(str(h.get("code")) for h in handling if isinstance(h, Mapping))
        lines.append(f"Handling:   {codes}")
    lines.append("")
    if content and payload.get("content") is not None:
        lines.append("Content:")
        lines.append(json.dumps(payload["content"], indent=2, ensure_ascii=False))
    else:
        lines.append(withheld or "The notice itself is in the local inbox: notice show MSGID")
    return "\n".join(lines) + "\n"


def read_password(file: Path | None, env: str | None) -> str:
    """(Blocking.) The SMTP password from its file (first line) or environment variable."""
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").splitlines()[0] if file.stat().st_size else ""
        except OSError as exc:
            raise MailError(
                f"cannot read the password file: {exc.strerror or type(exc).__name__}"
            ) from None
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise MailError(f"the environment variable {env} is not set")
        return value
    return ""


def _context(ca_file: Path | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise MailError(f"cannot load the CA file: {type(exc).__name__}") from None


async def send_mail(
    *,
    host: str,
    port: int,
    starttls: bool,
    ca_file: Path | None,
    username: str | None,
    password_file: Path | None,
    password_env: str | None,
    sender: str,
    to: Sequence[str],
    subject: str,
    body: str,
    msg_key: str,
    limit_s: float,
) -> None:
    """Submit one mail. ``msg_key`` (event and message id) goes into a header, so a
    mail client or filter can drop a repeat of the same event."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Subject"] = subject
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = make_msgid(domain="cpar.invalid")
    mail["X-Cpar-Event-Key"] = msg_key
    mail.set_content(body)
    password = None
    if username is not None:
        password = await asyncio.to_thread(read_password, password_file, password_env)
    context = await asyncio.to_thread(_context, ca_file) if starttls else None
    try:
        await aiosmtplib.send(
            mail,
            sender=sender,
            recipients=list(to),
            hostname=host,
            port=port,
            start_tls=starttls,
            tls_context=context,
            username=username,
            password=password,
            timeout=limit_s,
        )
    except aiosmtplib.SMTPResponseException as exc:
        raise MailError(f"SMTP server answered {exc.code} ({type(exc).__name__})") from None
    except aiosmtplib.SMTPException as exc:
        raise MailError(f"SMTP failed: {type(exc).__name__}") from None
    except (OSError, ssl.SSLError) as exc:
        raise MailError(f"SMTP connection failed: {type(exc).__name__}") from None
