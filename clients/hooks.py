"""Delivery hooks: hand each event to local systems, with retries.

**Events.** A hook runs once per event (:data:`clients.store.EVENTS`): ``received`` (a
new message in the inbox), ``reminded`` (the relay pushed it again: not acknowledged in
time), ``released`` (released to us as a fallback recipient), ``escalation`` (we are
told, as deputy, duty desk or supervisor, that another authority has not acknowledged a
message), ``expired`` (our queued envelope expired before it could be submitted),
``sent`` (the relay accepted our message), ``acknowledged`` (a recipient
acknowledged our message) and ``log_inconsistent`` (the relay showed a log that does
not extend the head held here; the message id is the relay's id, ``details`` has both
heads' sizes and roots). ``events = ["reminded", "escalation"]`` limits a hook to
those; without ``events`` a hook gets every event (for ``received`` exactly as before).
Call :meth:`HookRunner.fire` to record an event and its jobs.

Four kinds of hook, configured as :data:`HookConfig` (discriminated by ``type``):

``file``
    writes ``<directory>/<msg_id>.json`` (``received``) or
    ``<msg_id>.<event>[.<occurrence>].json`` atomically (temporary file, fsync, rename),
    mode 0600. Writing it again replaces it, so a retried job is harmless.
``command``
    runs ``argv`` directly (never through a shell) with the event JSON on stdin;
    success is exit status 0. On timeout the command's whole process group is killed.
    It gets a minimal environment (``PATH``, locale, ``CPAR_MESSAGE_ID``, ``CPAR_EVENT``,
    ``CPAR_HOOK`` and the configured ``env``), never the daemon's, which may hold the
    keystore passphrase. Its stdout is discarded; its stderr is the daemon's.
``webhook``
    POSTs the event JSON to ``url``; success is a 2xx status. Headers
    ``X-Cpar-Event``, ``X-Cpar-Message-Id`` and ``Idempotency-Key``
    (``<msg_id>:<event>[:<occurrence>]``). Redirects are not followed. Only loopback
    hosts (``127.0.0.0/8``, ``::1``, ``localhost``) are allowed unless
    ``allow_remote: true``, and a remote URL must then be https.
``email``
    sends a mail over SMTP (:mod:`clients.hook_email`): STARTTLS by default, optional
    authentication with a password from ``password_file`` or ``password_env`` (never
    in the configuration). The body is metadata only; the notice content is added only
    with ``include_content = true`` *and* when the handling codes allow onward sharing.

**At least once.** A job is marked done after it ran; a run in flight when the daemon
is killed runs again after the restart. Hook authors dedupe with ``CPAR_MESSAGE_ID`` +
``CPAR_EVENT`` (+ ``occurrence`` in the JSON), the webhook's ``Idempotency-Key``, or
the mail's ``X-Cpar-Event-Key``.

**Handling codes.** ``shares_onward`` says whether a hook passes the message outside
the authority's own secure systems. The defaults are conservative: ``false`` for
``file`` (a folder on this machine), ``true`` for ``command``, ``webhook`` and ``email``
(they may forward anywhere); set ``shares_onward: false`` only for a command or webhook
known to stay in-house. A message whose handling codes forbid onward sharing
(``no-onward-sharing``, ``originator-consent-required``, or any code this software does
not know) is never given to a hook with ``shares_onward: true``: the job is finished
as *skipped*, with the reason, and never retried. (Events that carry no content, such
as ``escalation`` or ``sent``, are metadata only and are not held back; an email hook
sends the metadata and withholds the content.)

**Retries.** A failed attempt is retried after ``backoff_base * 2**(n-1)`` seconds
(n = attempts so far), capped at 300 s, with jitter (between half and all of that);
after ``max_attempts`` the job is given up (``failed``). Jobs live in the inbox, so
they survive restarts.

**Privacy.** Logs and stored errors name the message id, the hook and what went wrong
(exit status, HTTP status, error class); never the message content.

The JSON handed to hooks (``format: cpar-hook-message``, ``v: 1``): ``event``,
``occurrence``, ``id``, and, when the message is in the inbox, ``sender``, ``to``,
``role``, ``priority``, ``created``, ``expires``, ``received_at``, ``ack_by``,
``envelope_hash``, ``handling`` (list of ``{code, meaning}``), ``kind``, ``content``,
``attachments`` (list of ``{name, type, size, path}``; ``path`` is null until the
attachment has been downloaded); ``details`` holds the event's metadata (a reminder's
note, the escalation's reason and step, who acknowledged ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import random
import signal
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal, Self, TypeAlias
from urllib.parse import urlsplit

import aiohttp
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)

from clients.hook_email import MailError, mail_body, send_mail
from clients.kinds import HANDLING_CODES, onward_sharing_restrictions
from clients.store import EVENTS, EventName, HookJob, Inbox, InboxMessage, StoredEvent
from clients.store.outbox import backoff_ms as outbox_backoff_ms

__all__ = [
    "MAX_BACKOFF_S",
    "CommandHook",
    "EmailHook",
    "FileHook",
    "HookConfig",
    "HookError",
    "HookRunner",
    "WebhookHook",
    "backoff_ms",
    "event_payload",
    "fire_event",
    "hook_payload",
    "parse_hooks",
]

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0
HookName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
_ENV_NAME = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")


class _Hook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: HookName
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 8
    backoff_base: Annotated[float, Field(gt=0, le=MAX_BACKOFF_S)] = 2.0
    """Seconds before the first retry; doubled for each further one, capped at 300 s."""
    timeout: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """Seconds one attempt may take (command, webhook and email)."""
    events: list[EventName] | None = Field(None, min_length=1)
    """Run only for these events; None (the default) is every event."""

    @field_validator("events")
    @classmethod
    def _no_repeats(cls, value: list[EventName] | None) -> list[EventName] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("an event is named twice")
        return value

    def wants(self, event: str) -> bool:
        return self.events is None or event in self.events


class FileHook(_Hook):
    type: Literal["file"]
    directory: Path
    shares_onward: bool = False

    @field_validator("directory")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("the directory must be an absolute path")
        return value


class CommandHook(_Hook):
    type: Literal["command"]
    argv: list[Annotated[str, StringConstraints(min_length=1)]] = Field(min_length=1)
    env: dict[_ENV_NAME, str] = Field(default_factory=dict)
    """Extra environment for the command (the daemon's own is not passed on)."""
    shares_onward: bool = True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookHook(_Hook):
    type: Literal["webhook"]
    url: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    allow_remote: bool = False
    headers: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")], str] = Field(
        default_factory=dict
    )
    """Extra request headers, e.g. an ``Authorization`` the local service expects."""
    shares_onward: bool = True

    @model_validator(mode="after")
    def _check_url(self) -> WebhookHook:
        try:
            parts = urlsplit(self.url)
            host = (parts.hostname or "").lower()
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"webhook url is not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError("webhook url must be an http(s) URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("webhook url must not carry credentials; use headers")
        if not _is_loopback(host):
            if not self.allow_remote:
                raise ValueError(
                    f"webhook host {host} is not loopback (127.0.0.1, ::1, localhost); "
                    "set allow_remote: true to send messages off this machine"
                )
            if parts.scheme != "https":
                raise ValueError("a remote webhook must use https")
        return self


_SUBJECT_FIELDS = {"event": "reminded", "id": "0", "priority": "urgent", "sender": "x"}


class EmailHook(_Hook):
    type: Literal["email"]
    host: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    starttls: bool = True
    """Upgrade the connection with STARTTLS (the server's certificate is verified)."""
    ca_file: Path | None = None
    """A CA certificate to trust for the server (an in-house mail relay), else the system's."""
    username: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    password_file: Path | None = None
    password_env: _ENV_NAME | None = None
    from_: Annotated[str, StringConstraints(min_length=3, max_length=320)] = Field(alias="from")
    to: list[Annotated[str, StringConstraints(min_length=3, max_length=320)]] = Field(
        min_length=1, max_length=50
    )
    subject: Annotated[str, StringConstraints(min_length=1, max_length=200)] = (
        "[cpar] {event} {id} ({priority})"
    )
    """A template: {event}, {id}, {priority} and {sender} are filled in (short enough to
    stay on one header line by default)."""
    include_content: bool = False
    """Add the notice itself, when its handling codes allow onward sharing."""
    shares_onward: bool = True

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError(
                "an email hook takes no password inline: use password_file or password_env"
            )
        return data

    @model_validator(mode="after")
    def _check(self) -> EmailHook:
        given = [x for x in (self.password_file, self.password_env) if x is not None]
        if self.username is not None and len(given) != 1:
            raise ValueError("with a username, set exactly one of password_file, password_env")
        if self.username is None and given:
            raise ValueError("a password is set but no username")
        if self.username is not None and not self.starttls and not _is_loopback(self.host):
            raise ValueError("authentication to a remote SMTP server needs starttls = true")
        try:
            self.subject.format(**_SUBJECT_FIELDS)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"subject template: {exc}; use {{event}}, {{id}}, {{priority}}, {{sender}}"
            ) from None
        return self


HookConfig: TypeAlias = Annotated[
    FileHook | CommandHook | WebhookHook | EmailHook, Field(discriminator="type")
]
_HOOKS: TypeAdapter[list[HookConfig]] = TypeAdapter(list[HookConfig])


def parse_hooks(raw: Sequence[Any]) -> list[HookConfig]:
    """Validate a list of hook configurations (e.g. from the daemon's config file).

    Raises ``ValueError`` (pydantic's ``ValidationError``) on a bad entry or a
    repeated name.
    """
    hooks = _HOOKS.validate_python(list(raw))
    _check_unique(hooks)
    return hooks


def _check_unique(hooks: Sequence[HookConfig]) -> None:
    names = [h.name for h in hooks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"hook names must be unique: {', '.join(dupes)}")


def backoff_ms(hook: HookConfig, attempts: int, rand: float) -> int:
    """Delay before the next attempt after ``attempts`` failures; ``rand`` is in [0, 1).
    The outbox's exponential backoff, with "equal" jitter (half to all of the delay)."""
    return outbox_backoff_ms(
        attempts,
        0.5 + 0.5 * rand,
        base_ms=hook.backoff_base * 1000,
        cap_ms=MAX_BACKOFF_S * 1000,
    )


def hook_payload(
    msg: InboxMessage, attachment_paths: dict[str, Path | None] | None = None
) -> dict[str, Any]:
    """The JSON object a hook receives for ``msg``.

    ``attachment_paths`` maps an attachment name to its local file, if downloaded.
    """
    paths = attachment_paths or {}
    return {
        "format": "cpar-hook-message",
        "v": 1,
        "event": "received",
        "occurrence": "",
        "id": msg.id,
        "sender": msg.sender,
        "to": list(msg.to),
        "role": msg.role,
        "priority": msg.priority,
        "created": msg.created,
        "expires": msg.expires,
        "received_at": msg.received_at,
        "ack_by": msg.ack_by,
        "envelope_hash": msg.envelope_hash,
        "handling": [
            {
                "code": code,
                "meaning": HANDLING_CODES.get(code, "unknown handling code: treat as restricted"),
            }
            for code in msg.handling
        ],
        "kind": msg.kind,
        "content": msg.content,
        "attachments": [
            {
                "name": a.name,
                "type": a.type,
                "size": a.size,
                "path": None if paths.get(a.name) is None else str(paths[a.name]),
            }
            for a in msg.attachments
        ],
    }


def event_payload(
    event: StoredEvent,
    msg: InboxMessage | None,
    attachment_paths: dict[str, Path | None] | None = None,
) -> dict[str, Any]:
    """The JSON object a hook receives for an event other than ``received``: the message
    (when it is in the inbox) plus the event's metadata under ``details``."""
    if msg is not None:
        out = hook_payload(msg, attachment_paths)
    else:
        out = {"format": "cpar-hook-message", "v": 1, "id": event.msg_id}
        for key in ("sender", "to", "priority", "ack_by"):
            if key in event.data:
                out[key] = event.data[key]
    out.update(event=event.event, occurrence=event.occurrence, at=event.at, details=event.data)
    return out


class HookError(Exception):
    """One attempt of a hook failed. The message is safe to log: it never quotes content."""


# --- the three deliveries ----------------------------------------------------------------


def _file_name(job: HookJob) -> str:
    if job.event == "received":
        return f"{job.msg_id}.json"
    tail = f".{job.occurrence}" if job.occurrence else ""
    return f"{job.msg_id}.{job.event}{tail}.json"


def _write_file(directory: Path, name: str, data: bytes) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / name
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


async def _run_file(hook: FileHook, job: HookJob, data: bytes) -> None:
    try:
        await asyncio.to_thread(_write_file, hook.directory, _file_name(job), data)
    except OSError as exc:
        raise HookError(
            f"cannot write to {hook.directory}: {exc.strerror or type(exc).__name__}"
        ) from None


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _run_command(hook: CommandHook, job: HookJob, data: bytes) -> None:
    env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV}
    env.update(hook.env)
    env.update(
        CPAR_MESSAGE_ID=job.msg_id,
        CPAR_EVENT=job.event,
        CPAR_OCCURRENCE=job.occurrence,
        CPAR_HOOK=hook.name,
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            *hook.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group, so a timeout kills it all
        )
    except OSError as exc:
        raise HookError(
            f"cannot start {hook.argv[0]}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        async with asyncio.timeout(hook.timeout):
            await proc.communicate(data)
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        raise HookError(f"timed out after {hook.timeout:g} s and was killed") from None
    except BaseException:
        _kill_group(proc)
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise HookError(f"exited with status {proc.returncode}")


def event_key(job: HookJob) -> str:
    """What identifies one event of one message: ``<msg_id>:<event>[:<occurrence>]``."""
    tail = f":{job.occurrence}" if job.occurrence else ""
    return f"{job.msg_id}:{job.event}{tail}"


async def _run_webhook(
    hook: WebhookHook, job: HookJob, data: bytes, session: aiohttp.ClientSession
) -> None:
    headers = {
        **hook.headers,
        "Content-Type": "application/json",
        "Idempotency-Key": event_key(job),
        "X-Cpar-Message-Id": job.msg_id,
        "X-Cpar-Event": job.event,
    }
    try:
        async with session.post(
            hook.url,
            data=data,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=hook.timeout),
        ) as resp:
            status = resp.status  # the body is not needed; leaving the block releases it
    except TimeoutError:
        raise HookError(f"timed out after {hook.timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise HookError(f"request failed: {type(exc).__name__}") from None
    if not 200 <= status < 300:
        raise HookError(f"answered HTTP {status}")


async def _run_email(hook: EmailHook, job: HookJob, payload: dict[str, Any]) -> None:
    restricted = onward_sharing_restrictions(_codes(payload))
    content = hook.include_content and not restricted and "content" in payload
    withheld = (
        f"Content withheld: handling code {', '.join(restricted)} forbids onward sharing."
        if hook.include_content and restricted
        else None
    )
    fields = {
        "event": job.event,
        "id": job.msg_id,
        "priority": payload.get("priority") or "-",
        "sender": payload.get("sender") or "-",
    }
    try:
        await send_mail(
            host=hook.host,
            port=hook.port,
            starttls=hook.starttls,
            ca_file=hook.ca_file,
            username=hook.username,
            password_file=hook.password_file,
            password_env=hook.password_env,
            sender=hook.from_,
            to=hook.to,
            subject=hook.subject.format(**fields),
            body=mail_body(payload, content=content, withheld=withheld),
            msg_key=event_key(job),
            limit_s=hook.timeout,
        )
    except MailError as exc:
        raise HookError(str(exc)) from None


def _codes(payload: dict[str, Any]) -> list[str]:
    return [str(h["code"]) for h in payload.get("handling") or [] if isinstance(h, dict)]


# --- the runner --------------------------------------------------------------------------


async def fire_event(
    inbox: Inbox,
    hooks: Iterable[HookConfig],
    event: EventName,
    msg_id: str,
    *,
    at: int,
    occurrence: str = "",
    data: dict[str, Any] | None = None,
) -> bool:
    """Record ``event`` about ``msg_id`` in ``inbox`` with a job for each of ``hooks`` that
    wants it; the daemon's runner runs them (this works from any process sharing the
    inbox, e.g. the CLI). False (nothing added) if the same event was recorded before.
    ``data`` is metadata only: it reaches the hooks as ``details``."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    if event == "received":
        raise ValueError("a received message's jobs are created when it is stored")
    return await inbox.events.record(
        event,
        msg_id,
        at=at,
        occurrence=occurrence,
        data=data or {},
        hooks=[h.name for h in hooks if h.wants(event)],
    )


class HookRunner:
    """Runs due hook jobs from an inbox.

    Use as ``async with HookRunner(...) as runner`` (it owns an aiohttp session for
    webhooks), or call :meth:`run_forever`, which opens and closes its own.
    """

    def __init__(
        self,
        inbox: Inbox,
        hooks: Sequence[HookConfig],
        *,
        clock: Callable[[], int],
        concurrency: int = 8,
        rand: Callable[[], float] = random.random,
    ) -> None:
        _check_unique(hooks)
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.inbox = inbox
        self.hooks: dict[str, HookConfig] = {h.name: h for h in hooks}
        self._clock = clock
        self._rand = rand
        self._limit = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    @property
    def hook_names(self) -> list[str]:
        """Names to pass as ``hooks=`` when storing a message, so its ``received`` jobs
        are created (the hooks that want ``received``)."""
        return self.hooks_for("received")

    def hooks_for(self, event: str) -> list[str]:
        """The names of the hooks that run for ``event``."""
        return [name for name, h in self.hooks.items() if h.wants(event)]

    async def fire(
        self,
        event: EventName,
        msg_id: str,
        *,
        at: int | None = None,
        occurrence: str = "",
        data: dict[str, Any] | None = None,
    ) -> bool:
        """Record ``event`` about ``msg_id`` and a job for each hook that wants it; the
        jobs run on the next round. Returns False (adding nothing) if the same event
        (same ``occurrence``) was recorded before. ``data`` is metadata only (no
        content): it reaches the hooks as ``details`` and ``notice show`` shows it.
        """
        return await fire_event(
            self.inbox,
            self.hooks.values(),
            event,
            msg_id,
            at=self._clock() if at is None else at,
            occurrence=occurrence,
            data=data,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No proxies from the environment: a loopback webhook must stay on this machine.
            self._session = aiohttp.ClientSession(trust_env=False)
        return self._session

    async def run_due(self) -> int:
        """Run every job due now, once; returns how many were handled (run or skipped).

        A failing job never stops the others: it is logged (without content) and
        rescheduled, or given up after its hook's ``max_attempts``.
        """
        now = self._clock()
        jobs = await self.inbox.hook_jobs.due(now, hooks=self.hooks.keys())
        if not jobs:
            return 0
        async with asyncio.TaskGroup() as tg:
            for job in jobs:
                tg.create_task(self._guarded(job))
        return len(jobs)

    async def run_forever(self, stop: asyncio.Event, interval: float) -> None:
        """Run due jobs every ``interval`` seconds until ``stop`` is set.

        An error in one round is logged and the loop goes on. Jobs in hand when ``stop``
        is set are finished (each is bounded by its timeout).
        """
        try:
            while not stop.is_set():
                try:
                    await self.run_due()
                except Exception:
                    log.exception("hook round failed; trying again in %.1f s", interval)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await stop.wait()
        finally:
            await self.aclose()

    async def _guarded(self, job: HookJob) -> None:
        async with self._limit:
            try:
                await self._run_job(job)
            except Exception:
                log.exception("hook %s: bookkeeping for message %s failed", job.hook, job.msg_id)

    async def _finish(self, job: HookJob, **outcome: Any) -> None:
        await self.inbox.hook_jobs.finish(
            job.msg_id, job.hook, event=job.event, occurrence=job.occurrence, **outcome
        )

    async def _payload(self, job: HookJob) -> tuple[dict[str, Any], InboxMessage | None] | None:
        """The JSON for a job and the message it carries (None: nothing to hand over)."""
        msg = await self.inbox.received.get(job.msg_id)
        if job.event == "received":
            if msg is None:
                return None
            return hook_payload(msg, await asyncio.to_thread(self._downloaded, msg)), msg
        event = await self.inbox.events.get(job.event, job.msg_id, job.occurrence)
        if event is None:
            return None
        if job.event not in ("reminded", "released"):
            msg = None  # metadata only: our own sent message, or another's escalation
        paths = None if msg is None else await asyncio.to_thread(self._downloaded, msg)
        return event_payload(event, msg, paths), msg

    async def _run_job(self, job: HookJob) -> None:
        hook = self.hooks[job.hook]
        found = await self._payload(job)
        if found is None:
            await self._finish(
                job, ok=False, error=None, next_attempt_at=None, skipped="nothing to hand over"
            )
            return
        payload, msg = found
        if hook.shares_onward and msg is not None and not isinstance(hook, EmailHook):
            blocking = onward_sharing_restrictions(msg.handling)
            if blocking:
                reason = (
                    f"handling code {', '.join(blocking)} forbids giving the message to "
                    f"hook {hook.name}, which shares onward"
                )
                log.info("hook %s skipped for message %s: %s", hook.name, msg.id, reason)
                await self._finish(job, ok=False, error=None, next_attempt_at=None, skipped=reason)
                return
        try:
            await self._deliver(hook, job, payload)
        except HookError as exc:
            error = str(exc)
        except Exception as exc:
            error = f"unexpected {type(exc).__name__}"
        else:
            await self._finish(job, ok=True, error=None, next_attempt_at=None)
            log.info("hook %s delivered %s of message %s", hook.name, job.event, job.msg_id)
            return
        attempts = job.attempts + 1
        if attempts >= hook.max_attempts:
            log.warning(
                "hook %s gave up on %s of message %s after %d attempts: %s",
                hook.name,
                job.event,
                job.msg_id,
                attempts,
                error,
            )
            await self._finish(job, ok=False, error=error, next_attempt_at=None)
            return
        due = self._clock() + backoff_ms(hook, attempts, self._rand())
        log.warning(
            "hook %s failed for %s of message %s (attempt %d of %d): %s; retrying",
            hook.name,
            job.event,
            job.msg_id,
            attempts,
            hook.max_attempts,
            error,
        )
        await self._finish(job, ok=False, error=error, next_attempt_at=due)

    async def _deliver(self, hook: HookConfig, job: HookJob, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        match hook:
            case FileHook():
                await _run_file(hook, job, data)
            case CommandHook():
                await _run_command(hook, job, data)
            case WebhookHook():
                await _run_webhook(hook, job, data, self._http())
            case EmailHook():
                await _run_email(hook, job, payload)

    def _downloaded(self, msg: InboxMessage) -> dict[str, Path | None]:
        out: dict[str, Path | None] = {}
        for a in msg.attachments:
            path = self.inbox.attachment_path(msg.id, a.name)
            out[a.name] = path if path.is_file() else None
        return out
