"""What every ``notice`` command shares: the context, parameter types, running a coroutine.

Commands only parse their options, call a use case (:mod:`clients.sender`,
:mod:`clients.decisions`, the inbox) and render the result (:mod:`clients.cli.render`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from clients.config import ClientSettings, load_client_settings
from keys.encoding import is_uuid7
from keys.identity import Identity
from keys.keystore import load_keystore, read_keystore_header, resolve_passphrase

__all__ = [
    "DURATION",
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
    "parse_duration",
    "parse_time",
    "run",
]

PROG = "notice"
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
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


class MessageIdType(click.ParamType[str]):
    name = "MSGID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().lower()
        if not is_uuid7(text):
            self.fail(f"{str(value)[:60]!r} is not a message id (a UUIDv7)", param, ctx)
        return text


DURATION = DurationType()
TIME = TimeType()
MSGID = MessageIdType()


# --- context ------------------------------------------------------------------------------


@dataclass
class CliContext:
    """The click ``obj``: the clock and the settings file, loaded on first use."""

    clock: Clock
    config: str | None = None
    _settings: ClientSettings | None = field(default=None, repr=False)

    def settings(self) -> ClientSettings:
        if self._settings is None:
            self._settings = load_client_settings(self.config)
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
