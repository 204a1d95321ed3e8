"""``notice console user add/remove/list``: the people who may sign in to the officer
console with a password (argon2id hashes in the config file)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from clients.cli.base import CliContext
from clients.cli.render import stdout_console, text
from clients.console.users import MIN_PASSWORD, add_user, hash_password, remove_user
from clients.refusal import RefusedError


def _config(obj: CliContext) -> Path:
    given = obj.config or os.environ.get("CPAR_CONFIG")
    if not given:
        raise RefusedError("give the config file to change with --config (or CPAR_CONFIG)")
    path = Path(given)
    if not path.is_file():
        raise RefusedError(f"no config file at {path}")
    obj.settings()  # refuse a config that does not load before changing it
    return path


@click.group("console")
def console_cmd() -> None:
    """The officer console the daemon serves (console_port): who may sign in."""


@console_cmd.group("user")
def user_cmd() -> None:
    """People who sign in with a password (argon2id hashes kept in the config file)."""


@user_cmd.command("add")
@click.argument("name")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, exists=True),
    help="Read the password from this file (first line); otherwise it is asked twice.",
)
@click.pass_obj
def user_add(obj: CliContext, name: str, password_file: str | None) -> None:
    """Add NAME (or set a new password for NAME). The daemon reads it at its next start."""
    if not 1 <= len(name) <= 200:
        raise RefusedError("a name has 1 to 200 characters")
    path = _config(obj)
    if password_file is not None:
        password = Path(password_file).read_text(encoding="utf-8").splitlines()[0:1]
        secret = password[0] if password else ""
    else:
        secret = click.prompt(
            f"Password for {name} (at least {MIN_PASSWORD} characters)",
            hide_input=True,
            confirmation_prompt=True,
        )
    try:
        hashed = hash_password(secret)
    except ValueError as exc:
        raise RefusedError(str(exc)) from None
    new = add_user(path, name, hashed)
    stdout_console().print(
        text(
            f"{'added' if new else 'changed the password of'} {name} in {path}; restart the daemon"
        )
    )


@user_cmd.command("remove")
@click.argument("name")
@click.pass_obj
def user_remove(obj: CliContext, name: str) -> None:
    """Remove NAME. The daemon forgets them at its next start."""
    path = _config(obj)
    if not remove_user(path, name):
        raise RefusedError(f"no console user {name} in {path}")
    stdout_console().print(text(f"removed {name} from {path}; restart the daemon"))


@user_cmd.command("list")
@click.pass_obj
def user_list(obj: CliContext) -> None:
    """The people who may sign in with a password."""
    names = [u.name for u in obj.settings().console_users]
    stdout_console().print(text("\n".join(names) if names else "no console users"))
