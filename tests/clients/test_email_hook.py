"""The email hook against a real local SMTP server (aiosmtpd, in a thread) that requires
STARTTLS (a self-signed certificate made here) and AUTH (LOGIN or PLAIN)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from clients.hooks import EmailHook, HookRunner, parse_hooks
from clients.store import Inbox
from tests.inboxfixture import deliver
from tests.netfixture import NOW, Network
from tests.tlsfixture import self_signed_certificate

USER, PASSWORD = "cpar-daemon", "correct horse battery staple"
SECRET_WORD = "Etruscan"  # in the notice content: it must not be mailed by default


def _certificate(folder: Path) -> tuple[Path, Path]:
    return self_signed_certificate(folder, "smtp")


@dataclass
class Mailbox:
    port: int = 0
    ca_file: Path = Path()
    mails: list[tuple[str, list[str], Message]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        assert isinstance(envelope.content, bytes)
        self.mails.append(
            (
                str(envelope.mail_from),
                list(envelope.rcpt_tos),
                message_from_bytes(envelope.content, policy=policy.default),
            )
        )
        return "250 OK"


def _start(mailbox: Mailbox, cert: Path, key: Path) -> Controller:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == USER.encode()
            and auth_data.password == PASSWORD.encode()
        )
        if ok:
            mailbox.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)  # a failure is answered 535

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        mailbox.port = s.getsockname()[1]
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=mailbox.port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    return controller


@pytest.fixture
async def smtp(tmp_path: Path) -> AsyncIterator[Mailbox]:
    cert, key = await asyncio.to_thread(_certificate, tmp_path)
    mailbox = Mailbox(ca_file=cert)
    controller = await asyncio.to_thread(_start, mailbox, cert, key)
    try:
        yield mailbox
    finally:
        await asyncio.to_thread(controller.stop)


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    box = await Inbox.open(tmp_path / "daemon" / "inbox.db")
    yield box
    await box.close()


class Clock:
    def __init__(self, now: int = NOW + 5000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def _password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / "smtp.pass"
    await asyncio.to_thread(path.write_text, password + "\n")
    return path


def _hook(smtp: Mailbox, password_file: Path, **kw: Any) -> EmailHook:
    [hook] = parse_hooks(
        [
            {
                "type": "email",
                "name": "duty-mail",
                "host": "127.0.0.1",
                "port": smtp.port,
                "ca_file": str(smtp.ca_file),
                "username": USER,
                "password_file": str(password_file),
                "from": "cpar@fr-oclcc.example",
                "to": ["duty@fr-oclcc.example", "chief@fr-oclcc.example"],
                "events": ["reminded", "escalation"],
                **kw,
            }
        ]
    )
    assert isinstance(hook, EmailHook)
    return hook


async def _stored(net: Network, inbox: Inbox, **kwargs: Any) -> str:
    opened, token = deliver(net, priority="urgent", **kwargs)
    assert await inbox.received.store(opened, token, received_at=NOW + 2000)
    return opened.header.id


async def test_a_reminder_is_mailed_over_starttls_with_auth_metadata_only(
    net: Network, inbox: Inbox, smtp: Mailbox, tmp_path: Path
) -> None:
    hook = _hook(smtp, await _password_file(tmp_path, PASSWORD))
    msg_id = await _stored(net, inbox)
    async with HookRunner(inbox, [hook], clock=Clock()) as runner:
        assert runner.hook_names == []  # this hook is not for "received"
        assert await runner.fire("reminded", msg_id, occurrence="7", data={"note": "remind"})
        assert await runner.run_due() == 1
    [(sender, rcpts, mail)] = smtp.mails
    assert sender == "cpar@fr-oclcc.example"
    assert rcpts == ["duty@fr-oclcc.example", "chief@fr-oclcc.example"]
    assert mail["Subject"] == f"[cpar] reminded {msg_id} (urgent)"
    assert mail["X-Cpar-Event-Key"] == f"{msg_id}:reminded:7"
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert f"Message:    {msg_id}".encode() in body and b"Note:       remind" in body
    assert SECRET_WORD.encode() not in body  # metadata only by default
    assert smtp.logins and smtp.logins[0] in ("PLAIN", "LOGIN")
    [job] = await inbox.hook_jobs.of_message(msg_id, event="reminded")
    assert (job.state, job.attempts) == ("done", 1)


async def test_content_is_mailed_only_when_asked_and_the_handling_codes_allow(
    net: Network, inbox: Inbox, smtp: Mailbox, tmp_path: Path
) -> None:
    hook = _hook(smtp, await _password_file(tmp_path, PASSWORD), include_content=True)
    free = await _stored(net, inbox)
    restricted = await _stored(net, inbox, handling=["no-onward-sharing"])
    async with HookRunner(inbox, [hook], clock=Clock()) as runner:
        await runner.fire("reminded", free, occurrence="1")
        await runner.fire("reminded", restricted, occurrence="2")
        assert await runner.run_due() == 2
    bodies = {m["Subject"].split()[2]: m.get_payload(decode=True) for _, _, m in smtp.mails}
    assert SECRET_WORD.encode() in bodies[free]
    assert SECRET_WORD.encode() not in bodies[restricted]
    assert b"Content withheld: handling code no-onward-sharing" in bodies[restricted]


async def test_a_wrong_password_fails_and_is_retried_with_backoff(
    net: Network, inbox: Inbox, smtp: Mailbox, tmp_path: Path
) -> None:
    hook = _hook(smtp, await _password_file(tmp_path, "wrong"), backoff_base=10)
    msg_id = await _stored(net, inbox)
    clock = Clock()
    async with HookRunner(inbox, [hook], clock=clock, rand=lambda: 0.0) as runner:
        await runner.fire("reminded", msg_id, occurrence="1")
        assert await runner.run_due() == 1
        [job] = await inbox.hook_jobs.of_message(msg_id)
        assert (job.state, job.attempts) == ("pending", 1)
        assert job.last_error is not None and job.last_error.startswith("SMTP server answered 535")
        assert job.next_attempt_at == clock.now + 5000  # half of 10 s with rand 0
        assert await runner.run_due() == 0  # not due yet
        await _password_file(tmp_path, PASSWORD)  # the operator fixes the password file
        clock.now += 5000
        assert await runner.run_due() == 1
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert (job.state, job.attempts) == ("done", 2)
    assert len(smtp.mails) == 1


def test_email_config_refusals(tmp_path: Path) -> None:
    base = {
        "type": "email",
        "name": "m",
        "host": "mail.example",
        "from": "a@b.example",
        "to": ["c@d.example"],
    }
    with pytest.raises(ValueError, match="no password inline"):
        parse_hooks([{**base, "username": "u", "password": "p"}])
    with pytest.raises(ValueError, match="exactly one of password_file, password_env"):
        parse_hooks([{**base, "username": "u"}])
    with pytest.raises(ValueError, match="needs starttls"):
        parse_hooks([{**base, "username": "u", "password_env": "P", "starttls": False}])
    with pytest.raises(ValueError, match="subject template"):
        parse_hooks([{**base, "subject": "{content}"}])
    with pytest.raises(ValueError, match="events"):
        parse_hooks([{**base, "events": ["paged"]}])
    [hook] = parse_hooks([base])
    assert isinstance(hook, EmailHook) and hook.starttls and hook.port == 587
    assert not hook.include_content and hook.events is None
