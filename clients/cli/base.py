"""What every ``notice`` command shares: the context, parameter types, running a coroutine.

Commands only parse their options, call a use case (:mod:`clients.sender`,
:mod:`clients.decisions`, the inbox) and render the result (:mod:`clients.cli.render`).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from clients.config import ClientSettings, ConfigError, load_client_settings
from clients.refusal import RefusedError
from clients.store import IdMatches, Inbox, UnknownMessageError
from keys.encoding import is_uuid7
from keys.identity import Identity
from keys.keystore import load_keystore, read_keystore_header, resolve_passphrase

__all__ = [
    "DURATION",
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "MSGID",
    "PROG",
    "TIME",
    "CliContext",
    "Clock",
    "UsageRefused",
    "existing_inbox",
    "global_options",
    "parse_duration",
    "parse_time",
    "resolve_id",
    "run",
]

PROG = "notice"
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 2
"""A missing or invalid configuration (as ``relay``)."""
NO_CONFIG = "no configuration: pass --config FILE or set CPAR_CONFIG"
Clock = Callable[[], int]
T = TypeVar("T")


class UsageRefused(click.ClickException):
    """A refusal found while parsing (e.g. an unreadable notice file): one line, exit 1."""

    exit_code = EXIT_REFUSED


# --- times and durations ------------------------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_UNIT_MS = (86_400_000, 3_600_000, 60_000, 1000)


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``2h``, ``3d`` (or ``1d12h``) in milliseconds; ValueError otherwise."""
    m = _DURATION.match(text.strip().lower())
    if not text.strip() or m is None or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration; use e.g. 90s, 30m, 2h or 3d")
    ms = sum(int(g) * unit for g, unit in zip(m.groups(), _UNIT_MS, strict=True) if g)
    if ms <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return ms


def parse_time(text: str) -> int:
    """ISO 8601 date-time in epoch milliseconds; a time without a zone is taken as UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 time; use e.g. 2027-01-15T18:00:00+01:00 or "
            "2027-01-15T17:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    if not 0 <= ms < 2**53:
        raise ValueError(f"{text!r} is out of range")
    return ms


class DurationType(click.ParamType[int]):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class TimeType(click.ParamType[int]):
    name = "ISO8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


MIN_PREFIX = 8
_ID_PREFIX = re.compile(r"^[0-9a-f-]+$")


class MessageIdType(click.ParamType[str]):
    """A message id, or a prefix of one (at least 8 characters), resolved later
    against the local records (:func:`resolve_id`)."""

    name = "MSGID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().lower()
        if is_uuid7(text):
            return text
        if len(text) < MIN_PREFIX or len(text) >= 36 or not _ID_PREFIX.match(text):
            self.fail(
                f"{str(value)[:60]!r} is not a message id (a UUIDv7, or its first "
                f"{MIN_PREFIX} or more characters)",
                param,
                ctx,
            )
        return text


def resolve_id(
    settings: ClientSettings, text: str, want: Literal["received", "sent", "any"]
) -> str:
    """The full message id ``text`` stands for, among the messages ``want`` (received,
    sent, or either) in the local records; a full id is taken as it is (the relay may
    know it)."""
    path = existing_inbox(settings)
    if path is None:
        if is_uuid7(text):
            return text
        raise RefusedError(f"no message {text} in the local records")

    async def q() -> IdMatches:
        async with await Inbox.open(path) as inbox:
            return await inbox.ids_with_prefix(text)

    found = run(q)
    if want == "any":
        found = IdMatches(received=(), sent=tuple(sorted({*found.received, *found.sent})))
        want = "sent"
    mine = found.received if want == "received" else found.sent
    other = found.sent if want == "received" else found.received
    if is_uuid7(text) and (text in mine or text not in other):
        return text
    if len(mine) == 1:
        return mine[0]
    if len(mine) > 1:
        raise RefusedError(
            f"message id {text} is ambiguous: it starts {', '.join(mine)}; give more characters"
        )
    if len(other) == 1:
        where = (
            f"one this authority sent: see 'notice status {other[0]}'"
            if want == "received"
            else f"one this authority received: see 'notice show {other[0]}'"
        )
        raise RefusedError(f"message {other[0]} is {where}")
    if want == "received":
        raise UnknownMessageError(f"no message {text} in the inbox")
    raise RefusedError(f"no message {text} in the local records")


DURATION = DurationType()
TIME = TimeType()
MSGID = MessageIdType()


# --- global options -----------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])
CONFIG_HELP = (
    "Client settings (TOML): relay_url, keystore, passphrase_file, root_key, data_dir, ..."
)
PASSPHRASE_FILE_HELP = "File holding the keystore passphrase (overrides passphrase_file)."  # noqa: S105


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            setattr(ctx.ensure_object(CliContext), name, value)

    return callback


def global_options(f: F) -> F:
    """``--config`` and ``--passphrase-file`` on a command too, so that they work where a
    person puts them: before the command (``notice --config x.toml inbox``) or after it
    (``notice inbox --config x.toml``)."""
    f = click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False),
        expose_value=False,
        callback=_remember("passphrase_file"),
        help=PASSPHRASE_FILE_HELP,
    )(f)
    f = click.option(
        "--config",
        type=click.Path(dir_okay=False),
        expose_value=False,
        callback=_remember("config"),
        help=CONFIG_HELP + " Also accepted before the command, or from CPAR_CONFIG.",
    )(f)
    return f


# --- context ------------------------------------------------------------------------------


@dataclass
class CliContext:
    """The click ``obj``: the clock and the settings file, loaded on first use."""

    clock: Clock
    config: str | None = None
    passphrase_file: str | None = None
    _settings: ClientSettings | None = field(default=None, repr=False)

    def settings(self) -> ClientSettings:
        if self._settings is None:
            overrides: dict[str, Any] = {}
            if self.passphrase_file is not None:
                overrides["passphrase_file"] = Path(self.passphrase_file)
            try:
                self._settings = load_client_settings(self.config, **overrides)
            except ConfigError as exc:
                given = self.config or os.environ.get("CPAR_CONFIG")
                if not given and "root_key" in str(exc):
                    raise ConfigError(NO_CONFIG) from None
                raise
        return self._settings

    def identity(self, settings: ClientSettings, *, prompt: bool = True) -> Identity:
        """Open the keystore: file checks first, then the passphrase (file, env, or TTY)."""
        kind, ident = read_keystore_header(settings.keystore)
        if kind != "authority":
            raise UsageRefused(
                f"{settings.keystore} holds a {kind} identity ({ident}), not an authority"
            )
        passphrase = resolve_passphrase(
            env=settings.passphrase_env,
            file=settings.passphrase_file,
            prompt="Keystore passphrase: " if prompt else None,
        )
        return load_keystore(settings.keystore, passphrase)


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine on a fresh event loop (output is rendered after it ends)."""

    async def runner() -> T:
        return await make()

    return asyncio.run(runner())


def existing_inbox(settings: ClientSettings) -> Path | None:
    """The inbox database if it exists (read commands never create one)."""
    path = settings.inbox_path
    return path if path.is_file() else None
