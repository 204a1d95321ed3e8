"""One relay per data folder: an exclusive ``flock`` on ``<data_dir>/relay.lock``.

Two ``relay serve`` on one SQLite ``data_dir`` would each believe they own the file and
its in-memory state (sessions, nonces, timers). The second refuses to start, naming the
holder. The lock is released by the kernel when the process ends, however it ends
(``kill -9`` included), so a stale lock file never blocks a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path


class DataDirInUseError(Exception):
    """Another live process holds the data folder's lock."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "relay.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DataDirInUseError` (blocking I/O: call from a
        thread once the loop runs)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUseError(
                f"{self.path.parent} is in use by another relay ({holder}); "
                "two relays cannot share one data_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
