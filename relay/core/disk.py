"""The relay's own disk (attachments, temp uploads): failures reported, recovery noticed.

A write that fails (a full disk, a quota, an I/O error) is translated into a problem the
client can act on (507 for no space, 503 otherwise) and marks the disk as failing, so
``/readyz`` says "not ready" and a load balancer stops sending uploads here. While it
is marked, ``/readyz`` tries a small write itself; the first that succeeds clears the
mark, so the relay recovers without a restart once space frees.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from pathlib import Path

from relay.core.errors import InsufficientStorageError, RelayError, UnavailableError

log = logging.getLogger(__name__)
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
PROBE_BYTES = 64 * 1024


class DiskHealth:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._failing: str | None = None

    @property
    def failing(self) -> str | None:
        """Why the last write failed, while it has not been seen to work again."""
        return self._failing

    def failed(self, exc: OSError) -> RelayError:
        """Record a failed write; return the problem to answer with."""
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if self._failing is None:
            log.warning(
                "writes to %s fail (%s): not ready until they work again", self.folder, reason
            )
        self._failing = reason
        if exc.errno in NO_SPACE:
            return InsufficientStorageError(
                "the relay has no room to store this upload; retry later",
                code="insufficient_storage",
            )
        return UnavailableError(f"the relay cannot write to its disk ({reason}); retry later")

    async def recheck(self) -> str | None:
        """While failing, try a small write; return the reason still failing, or ``None``."""
        if self._failing is None:
            return None
        try:
            await asyncio.to_thread(self._probe)
        except OSError as exc:
            self._failing = os.strerror(exc.errno) if exc.errno else str(exc)
            return self._failing
        log.info("writes to %s work again: ready", self.folder)
        self._failing = None
        return None

    def _probe(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        probe = self.folder / ".write-probe"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"\0" * PROBE_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            probe.unlink(missing_ok=True)


def remove_stale_uploads(folder: Path, *, older_than_s: float) -> int:
    """Delete temp files of uploads cut off (client gone, relay killed); blocking: run it
    off the loop. A live upload writes at least every ``body_timeout_s`` (else it is
    abandoned), so a temp file untouched for ``older_than_s`` (more than that) belongs to
    no live upload, whichever relay instance started it; 0 removes every one (a relay
    that owns its data folder alone, at start)."""
    removed = 0
    cutoff = time.time() - older_than_s
    try:
        found = list(folder.glob(".upload-*"))
    except OSError:
        return 0
    for path in found:
        try:
            if older_than_s > 0 and path.stat().st_mtime > cutoff:
                continue
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove the stale upload %s: %s", path.name, exc.strerror)
    return removed
