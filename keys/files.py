"""Files and folders only their owner can read: decrypted plaintext and local state."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a folder only its owner can enter: each missing level is created
    0700, and the folder itself is set to 0700 (blocking I/O: call from a thread)."""
    folder = Path(path)
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for level in reversed(missing):
        level.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def open_private(path: str | os.PathLike[str]) -> BinaryIO:
    """A new file for writing, 0600 from the first byte (replacing any old one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")
