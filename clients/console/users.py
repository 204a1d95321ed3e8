"""Console users: per-person passwords, argon2id-hashed (libsodium), kept in the client
config as ``[[console_users]]`` entries (``name``, ``password_hash``) and managed with
``notice console user add/remove`` (which edit the TOML file and keep its comments).

Signing in with a password is checked in constant time by libsodium, off the event
loop; failures are counted per name and per address, and past :data:`MAX_FAILURES`
within :data:`WINDOW_S` further attempts are refused until the window passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import nacl.exceptions
import nacl.pwhash
import nacl.pwhash.argon2id as argon2id
import tomlkit

__all__ = ["Attempts", "add_user", "hash_password", "password_ok", "remove_user"]

MAX_FAILURES = 5
WINDOW_S = 300.0
MIN_PASSWORD = 12


def hash_password(password: str) -> str:
    """An argon2id hash (libsodium's ``$argon2id$...`` string); blocking, ~0.1-0.5 s."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a console password has at least {MIN_PASSWORD} characters")
    return argon2id.str(
        password.encode(),
        opslimit=argon2id.OPSLIMIT_INTERACTIVE,
        memlimit=argon2id.MEMLIMIT_INTERACTIVE,
    ).decode("ascii")


def password_ok(password_hash: str, password: str) -> bool:
    """Blocking: run it off the event loop."""
    try:
        return bool(nacl.pwhash.verify(password_hash.encode("ascii"), password.encode()))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError):
        return False


class Attempts:
    """Failed sign-ins per key (a name, an address), in a sliding window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, list[float]] = {}

    def blocked(self, *keys: str) -> float:
        """Seconds until another attempt is allowed (0: now)."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            recent = [t for t in self._failures.get(key, []) if t > now - WINDOW_S]
            self._failures[key] = recent
            if len(recent) >= MAX_FAILURES:
                wait = max(wait, recent[0] + WINDOW_S - now)
        return wait

    def failed(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            self._failures.setdefault(key, []).append(now)
        if len(self._failures) > 10_000:  # bounded: forget the quietest
            for key in list(self._failures)[:1000]:
                del self._failures[key]

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)


def add_user(config: Path, name: str, password_hash: str) -> bool:
    """Add ``name`` (or replace its hash) in the config file; True if it was new."""
    doc = tomlkit.parse(config.read_text(encoding="utf-8"))
    users = doc.get("console_users")
    if users is None:
        users = tomlkit.aot()
        doc["console_users"] = users
    for user in users:
        if user.get("name") == name:
            user["password_hash"] = password_hash
            config.write_text(tomlkit.dumps(doc), encoding="utf-8")
            return False
    entry = tomlkit.table()
    entry["name"] = name
    entry["password_hash"] = password_hash
    users.append(entry)
    config.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return True


def remove_user(config: Path, name: str) -> bool:
    """Remove ``name`` from the config file; False if it was not there."""
    doc = tomlkit.parse(config.read_text(encoding="utf-8"))
    users = doc.get("console_users")
    if users is None:
        return False
    kept = [u for u in users if u.get("name") != name]
    if len(kept) == len(users):
        return False
    if kept:
        fresh = tomlkit.aot()
        for u in kept:
            fresh.append(u)
        doc["console_users"] = fresh
    else:
        del doc["console_users"]
    config.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return True
