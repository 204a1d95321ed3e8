"""The newest head of the relay's log this authority verified, and the check that every
newer head the relay shows extends it.

The daemon (at each directory refresh) and the ``notice`` CLI (``notice status``,
``notice log``) fetch the relay's head, verify its signature against the pinned
directory and, when it differs from the one held (``data_dir/log-head.json``, 0600),
ask for a consistency proof between the two sizes (:func:`keys.loghead.check_extends`).
A head that does not extend the held one (history rewritten, or a fork shown to
different authorities) is refused with :class:`keys.errors.LogForkError`, and the held
head is kept: the evidence of the fork. Deleting the file makes the next head trusted
as the first (do it only once the relay's operators have explained the fork).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from clients.client import RelayClient
from keys.directory import Directory
from keys.errors import KeysError, LogError, LogForkError
from keys.jws import parse_compact
from keys.loghead import SignedHead, check_extends, verify_log_head
from keys.models import LogHeadBody

__all__ = ["Checked", "ForkedLogError", "LogWatch"]


class ForkedLogError(LogForkError):
    """The relay shows a head that does not extend the one held here."""

    def __init__(self, message: str, *, held: SignedHead, shown: SignedHead) -> None:
        super().__init__(message)
        self.held = held
        self.shown = shown


@dataclass(frozen=True, slots=True)
class Checked:
    head: SignedHead
    """The head the relay showed now (verified)."""
    held: SignedHead | None
    """The head held before, if any."""


class LogWatch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def held(self) -> SignedHead | None:
        """The head kept on disk (verified when it was stored); blocking. An unreadable
        file is a :class:`keys.errors.LogError` (one line; delete the file to trust the
        relay's current head again)."""
        try:
            token = json.loads(self.path.read_text(encoding="utf-8"))["head"]
            body = LogHeadBody.model_validate_json(parse_compact(token, what="log head").payload)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, KeysError) as exc:
            raise LogError(
                f"{self.path} cannot be read ({type(exc).__name__}); delete it to trust the "
                "relay's current log head again"
            ) from None
        return SignedHead(token, body)

    def _keep(self, head: SignedHead) -> None:
        # A temp file of its own: the daemon and the CLI may both write at once.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".log-head-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(json.dumps({"head": head.token}).encode() + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def check(self, client: RelayClient, directory: Directory) -> Checked:
        """Fetch, verify and compare the relay's head; keep it when it is newer.
        Raises :class:`ForkedLogError` when it does not extend the held one."""
        head = verify_log_head(await client.log_head(), directory)
        held = await asyncio.to_thread(self.held)
        if held is not None and (held.size, held.root) != (head.size, head.root):
            low, high = sorted((held.size, head.size))
            try:
                check_extends(held, head, await client.log_consistency(low, high))
            except LogForkError as exc:
                raise ForkedLogError(str(exc), held=held, shown=head) from None
        if held is None or head.size > held.size:
            await asyncio.to_thread(self._keep, head)
        return Checked(head, held)
