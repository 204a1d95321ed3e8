"""Byte-level helpers shared by every signed object: base64url, hashes, ids, JSON."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from keys.errors import EncodingError

Rng = Callable[[int], bytes]
"""A source of random bytes: ``os.urandom`` in production, a seeded one for vectors."""


def b64e(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode()


def b64d(text: str | bytes, *, what: str = "value") -> bytes:
    """Strict base64url decode without padding; refuses padding and foreign characters."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise EncodingError(f"{what} is not base64url") from exc
    check_b64(text, what=what)
    try:  # the alphabet is checked: straight to the C decoder
        padded = (text + "=" * (-len(text) % 4)).encode("ascii")
        return binascii.a2b_base64(padded.translate(_TO_STANDARD))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - check_b64 guards this
        raise EncodingError(f"{what} is not base64url") from exc


_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


# The last character of a canonical encoding leaves no bits unused: with 2 characters
# in the final group it encodes 2 bits (4 unused must be 0), with 3 it encodes 4 bits.
_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ALPHABET_BYTES = _B64URL.encode("ascii")
_LAST_OF_2 = frozenset(c for i, c in enumerate(_B64URL) if i % 16 == 0)
_LAST_OF_3 = frozenset(c for i, c in enumerate(_B64URL) if i % 4 == 0)


def check_b64(text: str, *, what: str = "value") -> None:
    """Refuse what :func:`b64d` would refuse (padding, foreign characters, an impossible
    length, non-canonical trailing bits) without decoding."""
    try:  # delete every alphabet character: nothing may be left (C speed, no regex)
        foreign = text.encode("ascii").translate(None, _ALPHABET_BYTES)
    except UnicodeEncodeError:
        foreign = b"?"
    if foreign or len(text) % 4 == 1:
        raise EncodingError(f"{what} is not unpadded base64url")
    tail = len(text) % 4
    if (tail == 2 and text[-1] not in _LAST_OF_2) or (tail == 3 and text[-1] not in _LAST_OF_3):
        # Non-canonical trailing bits: two strings would decode to the same bytes.
        raise EncodingError(f"{what} is not canonical base64url")


@functools.lru_cache(maxsize=4096)
def public_key(text: str) -> bytes:
    """A directory's base64url public key as bytes (decoded once per key, then remembered)."""
    return b64d(text, what="public key")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON. Signed objects are signed as produced, never re-serialised."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def key_id(public_key: bytes) -> str:
    """Key id: lower-case RFC 4648 base32 of the first 10 bytes of SHA-256(public key).

    Sixteen characters, 80 bits. The fingerprint is the same value in upper case,
    grouped in fours, so it can be read aloud over the phone and compared.
    """
    digest = hashlib.sha256(public_key).digest()[:10]
    return base64.b32encode(digest).decode("ascii").lower()


def fingerprint(public_key: bytes) -> str:
    kid = key_id(public_key).upper()
    return " ".join(kid[i : i + 4] for i in range(0, 16, 4))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def uuid7(*, ms: int | None = None, rng: Rng = os.urandom) -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then 74 random bits."""
    ts = now_ms() if ms is None else ms
    rand = int.from_bytes(rng(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (ts & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


_UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
AUTHORITY_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,62}$"
MESSAGE_ID_PATTERN = _UUID7_RE.pattern


def is_uuid7(text: str) -> bool:
    return bool(_UUID7_RE.match(text))
