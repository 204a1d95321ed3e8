"""``notice``: send signed, end-to-end encrypted notices and work the local inbox.

::

    notice daemon                       receive messages and receipts (runs until SIGTERM)
    notice send --to fr-oclcc ...       seal, upload attachments, send, verify the receipt
    notice status MSGID                 the receipt timeline of a sent message, verified
    notice watch MSGID                  the same, live, until acknowledged/rejected/expired
    notice sent                         messages this authority sent, with their last status
    notice inbox / show MSGID           received messages
    notice ack MSGID --person NAME      take a message in hand (signed receipt to the sender)
    notice reject MSGID --reason TEXT   refuse a message (signed receipt to the sender)
    notice directory                    authorities, contact points, hours, who is reachable
    notice audit                        the local audit trail: who did what, and when

Settings come from the TOML file given by ``--config`` (or ``CPAR_CONFIG``) and
``CPAR_*`` variables (:mod:`clients.config`); ``--config`` and ``--passphrase-file`` work
before or after the command. Every refusal prints one line on stderr (``notice: error:
...``) and exits 1; a malformed command line, or a missing or invalid configuration,
exits 2 (as ``relay``). Key material is
never printed; message content is shown only by ``show`` and ``inbox`` (to the person
who runs them), never logged.

Blocking work (files, the keystore, argon2id) happens before the event loop starts or
in worker threads, and output is rendered after the loop has finished.

The package only parses and renders: one module per command group (:mod:`.send`,
:mod:`.sent` for status and sent, :mod:`.received` for inbox, show, ack and reject,
:mod:`.daemon`), shared parsing in :mod:`.base`, output in :mod:`.render` (and
:mod:`.render_sent` for the sent side). The use cases
live in :mod:`clients.sender`, :mod:`clients.decisions` and :mod:`clients.store`.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from clients.cli.audit import audit_cmd
from clients.cli.base import (
    CONFIG_HELP,
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    PASSPHRASE_FILE_HELP,
    PROG,
    CliContext,
    Clock,
    parse_duration,
    parse_time,
)
from clients.cli.console import console_cmd
from clients.cli.daemon import daemon_cmd
from clients.cli.directory import directory_cmd
from clients.cli.evidence import evidence_cmd
from clients.cli.log import log_cmd
from clients.cli.received import ack_cmd, inbox_cmd, reject_cmd, show_cmd
from clients.cli.render import clean
from clients.cli.send import send_cmd
from clients.cli.sent import sent_cmd, status_cmd, watch_cmd
from clients.config import ConfigError
from clients.errors import ClientError, RelayProblem
from clients.kinds import InvalidNoticeError
from clients.refusal import RefusedError, one_line
from clients.store import InboxError
from keys.encoding import now_ms
from keys.errors import KeysError

__all__ = ["cli", "main", "parse_duration", "parse_time"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config",
    envvar="CPAR_CONFIG",
    show_envvar=True,
    type=click.Path(dir_okay=False),
    help=CONFIG_HELP + " Also accepted after the command.",
)
@click.option(
    "--passphrase-file",
    "passphrase_file",
    type=click.Path(dir_okay=False),
    help=PASSPHRASE_FILE_HELP + " Also accepted after the command.",
)
@click.pass_obj
def cli(obj: CliContext, config: str | None, passphrase_file: str | None) -> None:
    """Cultural Property Alert Relay: notices between competent authorities.

    Send signed, end-to-end encrypted notices through the relay, follow their signed
    receipts, and work the inbox that the daemon fills. Times are shown in UTC. Add
    --json to a listing command for machine-readable output.

    \b
    Typical use:
      notice daemon                                   (as a service)
      notice send --to fr-oclcc --priority urgent --kind identification_notice \\
          --object "Etruscan bronze mirror" --where "Lot 112, online auction" \\
          --sale-deadline 2027-01-15T18:00Z --attach mirror.jpg
      notice status MSGID        (or: notice watch MSGID)
      notice inbox
      notice show MSGID
      notice ack MSGID --person "Lt. Rossi"
    """
    obj.config = config
    obj.passphrase_file = passphrase_file


for _command in (
    daemon_cmd,
    send_cmd,
    status_cmd,
    sent_cmd,
    inbox_cmd,
    show_cmd,
    ack_cmd,
    reject_cmd,
    directory_cmd,
    watch_cmd,
    log_cmd,
    evidence_cmd,
    console_cmd,
    audit_cmd,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 refused, 2 usage or configuration).

    ``clock`` (epoch milliseconds) is for tests only: it replaces the real clock for
    request signatures, sealing and receipts.
    """
    state = CliContext(clock=clock or now_ms)
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name=PROG,
            standalone_mode=False,
            obj=state,
        )
        if isinstance(code, int) and code != EXIT_OK:  # a command's Exit(code)
            return code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)  # bare "notice": the help, not an error
        return EXIT_USAGE
    except click.exceptions.Abort:
        return _refuse("aborted")
    except click.ClickException as exc:
        return _refuse(exc.format_message(), exc.exit_code)
    except RefusedError as exc:
        return _refuse(str(exc))
    except RelayProblem as exc:
        return _refuse(f"the relay refused: {exc.detail} ({exc.code})")
    except ConfigError as exc:
        return _refuse(str(exc), EXIT_CONFIG)
    except (KeysError, ClientError, InboxError, InvalidNoticeError) as exc:
        return _refuse(str(exc))
    except OSError as exc:
        name = f": {exc.filename}" if exc.filename else ""
        return _refuse(f"{exc.strerror or exc}{name}")
    except KeyboardInterrupt:
        return _refuse("interrupted", 130)
    return EXIT_OK


def _refuse(message: str, code: int = EXIT_REFUSED) -> int:
    click.echo(f"{PROG}: error: {one_line(clean(message))}", err=True)
    return code
