"""``relay``: run and inspect the relay.

``relay serve`` runs the server until SIGTERM or SIGINT, then shuts down gracefully:
it stops accepting connections, tells connected daemons it is going away, lets requests
in flight finish within ``shutdown_grace_s``, and closes the store. ``relay
check-config`` validates the configuration and exits 0 or 2.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import click

from relay.api.connections import raise_nofile_limit
from relay.api.state import GUARD
from relay.app import StartupError, create_app, start_serving
from relay.settings import ConfigError, RelaySettings, load_settings

EXIT_CONFIG = 2
EXIT_STARTUP = 1
log = logging.getLogger("relay")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    help="TOML configuration file, for the command that follows (it may also be given "
    "after the command).",
)
def cli(config: str | None) -> None:
    """The Cultural Property Alert Relay server.

    Configuration comes from RELAY_* environment variables and an optional TOML file
    (--config or RELAY_CONFIG); see docs/OPERATIONS.md for every setting.
    """
    if config is not None:  # `relay --config X serve` works like `relay serve --config X`
        os.environ["RELAY_CONFIG"] = config


_CONFIG = click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    envvar="RELAY_CONFIG",
    help="TOML configuration file (environment variables take precedence).",
)


_PASSPHRASE_FILE = click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="File holding the relay keystore's passphrase (overrides keystore_passphrase_file; "
    "default: the RELAY_KEYSTORE_PASSPHRASE variable).",
)


def _passphrase(passphrase_file: str | None) -> dict[str, object]:
    return {} if passphrase_file is None else {"keystore_passphrase_file": passphrase_file}


@cli.command()
@_CONFIG
@_PASSPHRASE_FILE
@click.option("--host", help="Override the listen address.")
@click.option("--port", type=int, help="Override the listen port (0 picks a free one).")
def serve(
    config: str | None, passphrase_file: str | None, host: str | None, port: int | None
) -> None:
    """Run the relay until SIGTERM/SIGINT, then shut down gracefully."""
    overrides: dict[str, object] = _passphrase(passphrase_file)
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = load_settings(config, **overrides)
    _setup_logging(settings.log_level)
    run(_serve(settings))


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (Linux/macOS): a faster event loop, same API."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _serve(settings: RelaySettings) -> None:
    nofile = raise_nofile_limit()
    app = create_app(settings)
    limits = app[GUARD].limits
    log.info(
        "open-file limit %d: at most %d unauthenticated connections, %d per source address",
        nofile,
        limits.max_unauthenticated,
        limits.max_unauthenticated_per_source,
    )
    runner, _ = await start_serving(app, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    scheme = "https" if settings.tls_cert_file is not None else "http"
    for addr in runner.addresses:
        host, port = addr[0], addr[1]
        log.info("relay listening on %s://%s:%d", scheme, host, port)
        print(f"relay listening on {scheme}://{host}:{port}", flush=True)
    try:
        await stop.wait()
        log.info("shutting down: closing connections, finishing requests in flight")
    finally:
        await runner.cleanup()
        log.info("relay stopped")


@cli.command("check-config")
@_CONFIG
@_PASSPHRASE_FILE
def check_config(config: str | None, passphrase_file: str | None) -> None:
    """Check everything `relay serve` checks, short of binding the port, and exit.

    Settings, the pinned root key, the keystore and its passphrase, a verified directory
    version that lists this relay, and the store (opened, migrated and pinged; nothing
    is fired or served). Exits 0, or 2 for a bad setting, 1 for anything else.
    """
    from relay.app import check

    settings = load_settings(config, **_passphrase(passphrase_file))
    what = asyncio.run(check(settings))
    click.echo(
        f"configuration OK: {what}; {settings.store} store in {settings.data_dir}, "
        f"would listen on {settings.host}:{settings.port}"
    )


@cli.command("operator-token")
@click.option("--name", required=True, help="The operator's name (letters, digits, . _ -).")
@click.option(
    "--token-out",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the token to this file (mode 0600) instead of printing it.",
)
@click.option(
    "--config-out",
    type=click.Path(dir_okay=False, writable=True),
    help="Append the [[operators]] entry to this TOML file (created 0600) instead of printing it.",
)
def operator_token(name: str, token_out: str | None, config_out: str | None) -> None:
    """Make an operator credential for /ops, /metrics and `relay status`.

    Prints a fresh token once (give it to the operator; the relay keeps only its
    SHA-256) and the [[operators]] entry to add to the relay configuration, or writes
    them to files (--token-out, --config-out) for scripted set-ups.
    """
    from pydantic import ValidationError

    from relay.api.ops import new_operator_token, token_digest
    from relay.settings import OperatorCredential

    token = new_operator_token()
    try:
        cred = OperatorCredential(name=name, token_sha256=token_digest(token))
    except ValidationError as exc:
        raise click.BadParameter(
            "use 1-64 letters, digits, '.', '_' or '-'", param_hint="--name"
        ) from exc
    entry = f'[[operators]]\nname = "{cred.name}"\ntoken_sha256 = "{cred.token_sha256}"\n'
    if token_out is not None:
        _write_private(token_out, token + "\n", append=False)
        click.echo(f"operator token for {cred.name} written to {token_out}")
    else:
        click.echo(f"operator token for {cred.name} (shown once; store it like a password):")
        click.echo(token)
        click.echo("")
    if config_out is not None:
        _write_private(config_out, entry, append=True)
        click.echo(f"[[operators]] entry for {cred.name} added to {config_out}")
    else:
        click.echo("add to the relay configuration (TOML):")
        click.echo(entry, nl=False)


def _write_private(path: str, text: str, *, append: bool) -> None:
    import os

    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


@cli.command()
@click.option(
    "--url",
    envvar="RELAY_URL",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="The relay's base URL.",
)
@click.option(
    "--token-file",
    envvar="RELAY_OPERATOR_TOKEN_FILE",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="File holding an operator token (from `relay operator-token`).",
)
@click.option(
    "--tls-cert",
    envvar="RELAY_TLS_CERT_FILE",
    type=click.Path(exists=True, dir_okay=False),
    help="The relay's certificate (PEM) to trust for an https:// URL (default: the "
    "system's CAs; on the relay host, tls_cert_file).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
def status(url: str, token_file: str, tls_cert: str | None, as_json: bool) -> None:
    """Show authorities, open escalations and timers; exit 1 when degraded.

    Degraded: an authority unreachable for longer than unreachable_after_s, a message at
    the notify step, an escalation timer overdue, or the directory expiring within 14
    days; each is named on stderr.

    Also exits 1, with one line on stderr, when the relay cannot be asked.
    """
    from pathlib import Path

    from relay.status import StatusError, run_status

    token = Path(token_file).read_text(encoding="utf-8").strip()
    if not token:
        raise click.ClickException(f"{token_file} is empty")
    try:
        problems = run_status(url, token, as_json=as_json, tls_cert=tls_cert)
    except StatusError as exc:
        raise click.ClickException(str(exc)) from exc
    if problems:
        raise click.ClickException("degraded: " + "; ".join(problems))


@cli.command("alert-rules")
def alert_rules() -> None:
    """Print the Prometheus alert rules for the relay's metrics (YAML, for rule_files).

    One alert per way the relay's health turns degraded: an authority unreachable, a
    message at the notify step, an escalation timer overdue, the store unavailable.
    """
    from importlib import resources

    text = resources.files("relay.prometheus").joinpath("alerts.yml").read_text("utf-8")
    click.echo(text, nl=False)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.main(
            args=list(argv) if argv is not None else None, prog_name="relay", standalone_mode=False
        )
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)  # bare command: the help, not an error
        return 2
    except click.exceptions.Abort:
        return 1
    except click.ClickException as exc:
        click.echo(f"relay: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except ConfigError as exc:
        click.echo(f"relay: error: {exc}", err=True)
        return EXIT_CONFIG
    except StartupError as exc:
        click.echo(f"relay: error: cannot start: {exc}", err=True)
        return EXIT_STARTUP
    except OSError as exc:
        click.echo(f"relay: error: {exc.strerror or exc}", err=True)
        return EXIT_STARTUP
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
