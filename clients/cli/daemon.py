"""``notice daemon``: run the authority's daemon in the foreground."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import click

from clients.cli.base import CliContext, global_options, run

log = logging.getLogger("clients.cli")


@click.command("daemon")
@global_options
@click.pass_obj
def daemon_cmd(obj: CliContext) -> None:
    """Run the authority's daemon until SIGTERM or SIGINT.

    It keeps one outbound connection to the relay, verifies and decrypts every message
    addressed to this authority, stores it in the local inbox, returns a signed
    'delivered' receipt, downloads attachments, records receipts about messages this
    authority sent, and runs the configured delivery hooks. Logs go to stderr at the
    configured log_level; they never contain message content. The keystore passphrase
    comes from passphrase_file or the variable named by passphrase_env (no prompt).
    """
    from clients.daemon import Daemon

    settings = obj.settings()
    identity = obj.identity(settings, prompt=False)
    _setup_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        try:
            log.info("daemon for %s starting; relay %s", identity.id, settings.relay_url)
            await Daemon(settings, identity, clock=obj.clock).run(stop)
            log.info("daemon for %s stopped", identity.id)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    run(main)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
