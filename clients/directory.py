"""The pinned directory, shared by the CLI and the daemon.

The client trusts the directory only through the pinned root key (``root_key`` in the
settings) and remembers every directory version it has accepted in ``pin_path``, so a
relay can never roll the directory back or fork it (:class:`keys.directory.DirectoryPin`).
The newest accepted version itself is kept beside the pin (``directory-current.jws``), so
a message can be sealed while the relay cannot be reached (the outbox).

::

    pinned = PinnedDirectory.load(settings)        # blocking: call before the loop or
                                                   # in a worker thread
    directory = await pinned.refresh(client)       # fetch, check against the pin, save
    pinned.current                                 # the newest accepted version, or None
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from clients.client import RelayClient
from clients.config import ClientSettings
from clients.errors import ClientError
from clients.refusal import RefusedError
from keys.directory import Directory, DirectoryPin
from keys.encoding import now_ms
from keys.errors import KeysError
from keys.keystore import write_private_file

__all__ = ["DirectoryExpiredError", "PinnedDirectory", "check_recipients"]


class PinnedDirectory:
    """The directory as far as the pinned root and the accepted history allow."""

    def __init__(self, pin: DirectoryPin, path: Path, *, grace_ms: int = 7 * 86_400_000) -> None:
        self.pin = pin
        self.path = path
        self.grace_ms = grace_ms

    @classmethod
    def load(cls, settings: ClientSettings) -> PinnedDirectory:
        """The pinned root and every version accepted before (blocking file I/O)."""
        roots = [settings.root_public_key()]
        path = settings.pin_path
        grace_ms = int(settings.directory_grace_s * 1000)
        if not path.exists():
            return cls(DirectoryPin(roots), path, grace_ms=grace_ms)
        pin = DirectoryPin.load(roots, path.read_text(encoding="utf-8"))
        current = _current_path(path)
        if current.exists():
            # Verified again against the root and the pin: a stale or altered copy is
            # ignored (the next refresh brings the newest from the relay).
            with contextlib.suppress(KeysError, OSError):
                pin.accept(current.read_bytes())
        return cls(pin, path, grace_ms=grace_ms)

    @property
    def current(self) -> Directory | None:
        """The newest accepted directory, or None before the first refresh."""
        return self.pin.current

    def tls_pins(self) -> frozenset[str] | None:
        """The relays' TLS key pins in the newest accepted directory; None before one."""
        current = self.pin.current
        return None if current is None else current.tls_pins()

    def require(self, now: int | None = None) -> Directory:
        """The newest accepted directory; ClientError if there is none yet, or if it is
        past its expiry plus the grace."""
        if self.pin.current is None:
            raise ClientError("no directory yet")
        return self.usable(self.pin.current, now_ms() if now is None else now)

    def usable(self, directory: Directory, now: int) -> Directory:
        """``directory``, or :class:`DirectoryExpiredError` past its expiry plus grace."""
        if directory.expired(now, self.grace_ms):
            raise DirectoryExpiredError(expired_message(directory, self.grace_ms))
        return directory

    async def refresh(self, client: RelayClient) -> Directory:
        """Fetch the relay's directory history and move the pin forward.

        Refuses rollback and forks (:class:`keys.errors.KeysError`); the accepted history
        is written (mode 0600) before this returns. Verification and the file write run in
        a worker thread.
        """
        chain = await client.directory_chain()
        tokens = list(chain.versions)

        def accept() -> Directory:
            self.pin.follow(chain.rotations)  # root-key rotations signed by a trusted root
            current = self.pin.accept_history(tokens)
            write_private_file(self.path, self.pin.dump().encode())
            write_private_file(_current_path(self.path), current.token.encode())
            return current

        return await asyncio.to_thread(accept)


class DirectoryExpiredError(ClientError):
    """The newest directory version is past its expiry and the grace: fail closed."""


def expired_message(directory: Directory, grace_ms: int) -> str:
    assert directory.expires is not None
    return (
        f"directory version {directory.version} expired on {_utc(directory.expires)} and its "
        f"grace ended on {_utc(directory.expires + grace_ms)}: refusing to use it until the "
        "network's directory keeper publishes a newer version"
    )


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def check_recipients(directory: Directory, ids: Sequence[str]) -> None:
    """Refuse a recipient that is not an authority of ``directory``, suggesting the
    closest ids (a typo such as ``fr-oclc`` for ``fr-oclcc``)."""
    known = [a.id for a in directory.authorities if a.role != "relay"]
    for aid in ids:
        entry = directory.get(aid)
        if entry is not None and entry.role == "relay":
            raise RefusedError(f"{aid} is a relay, not an authority: it cannot receive notices")
        if entry is None:
            close = difflib.get_close_matches(aid, known, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise RefusedError(
                f"recipient {aid} is not in the directory{hint}; "
                "'notice directory' lists the authorities"
            )


def _current_path(pin_path: Path) -> Path:
    return pin_path.with_name("directory-current.jws")
