"""The relay's view of the signed directory: versions read from a folder, pinned."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

from keys.directory import Directory, DirectoryPin
from keys.encoding import key_id
from keys.errors import KeysError
from keys.keystore import write_private_file

log = logging.getLogger(__name__)
_NUM = re.compile(r"(\d+)")


def _natural(path: Path) -> tuple[object, ...]:
    return tuple(int(p) if p.isdigit() else p for p in _NUM.split(path.name))


class DirectoryHolder:
    """Loads ``*.jws`` versions from a folder through a :class:`DirectoryPin`.

    The pin state is persisted, so a relay restarted with an older folder refuses the
    rollback instead of serving it. All methods here do file I/O: call them from a
    thread (``asyncio.to_thread``) once the loop runs.
    """

    def __init__(self, folder: Path, roots: Callable[[], list[bytes]], pin_file: Path) -> None:
        self.folder = folder
        self.pin_file = pin_file
        self._roots = roots
        self.roots: list[bytes] = []
        self.pin: DirectoryPin | None = None
        self.history: list[Directory] = []
        self.rotations: list[str] = []
        """Root-key rotation statements (``*.rotation`` files), served to clients."""
        self._seen: tuple[tuple[str, float], ...] = ()

    @property
    def current(self) -> Directory:
        if self.pin is None or self.pin.current is None:
            raise KeysError("no directory loaded")
        return self.pin.current

    def load(self) -> bool:
        """(Re)read the folder. Returns True when a new version became current."""
        if self.pin is None:
            self.roots = self._roots()
            self.pin = DirectoryPin(self.roots)
            if self.pin_file.exists():
                self.pin = DirectoryPin.load(self.roots, self.pin_file.read_text(encoding="utf-8"))
        files = sorted(self.folder.glob("*.jws"), key=_natural)
        rotation_files = sorted(self.folder.glob("*.rotation"), key=_natural)
        stamp = tuple((f.name, f.stat().st_mtime) for f in [*rotation_files, *files])
        if stamp == self._seen and self.pin.current is not None:
            return False
        if not files:
            raise KeysError(f"no directory versions (*.jws) in {self.folder}")
        tokens = [f.read_text(encoding="ascii").strip() for f in files]
        rotations = [f.read_text(encoding="ascii").strip() for f in rotation_files]
        before = self.pin.current.version if self.pin.current else 0
        for new_root in self.pin.follow(rotations):
            log.warning(
                "following a root-key rotation: the directory is now signed by %s", key_id(new_root)
            )
        newest = self.pin.accept_history(tokens)
        self.roots = list(self.pin.roots)
        self.history = sorted(
            (Directory.verify(t, self.roots) for t in tokens), key=lambda d: d.version
        )
        self.rotations = rotations
        self._seen = stamp
        write_private_file(self.pin_file, self.pin.dump().encode())
        if newest.version != before:
            log.info("directory %s version %d is current", newest.network, newest.version)
            return True
        return False
