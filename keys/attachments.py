"""Attachments: streamed encryption with libsodium secretstream (XChaCha20-Poly1305).

Ciphertext layout: ``header(24) || chunk_1 || ... || chunk_k``. Every plaintext chunk is
64 KiB except the last (which may be shorter, or empty for an empty file); each
ciphertext chunk is ``plaintext chunk + 17`` bytes, the last one carrying
``TAG_FINAL``. An attachment is stored and referenced by the SHA-256 of its whole
ciphertext; its key, hash, length and name travel only inside the encrypted payload.

Encryption and decryption hold one chunk at a time, so a 100 MiB photo archive never
sits in memory. Decryption writes to a temporary file and renames it into place only
once the final tag and the hash have both checked out.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

import nacl.bindings as sodium
import nacl.exceptions
from pydantic import ValidationError

from keys.encoding import b64d, b64e
from keys.errors import AttachmentError
from keys.files import open_private, private_dir
from keys.models import AttachmentManifestEntry

CHUNK_BYTES = 64 * 1024
HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24
ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES  # 17
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL


def ciphertext_size(plain_size: int) -> int:
    chunks = max(1, -(-plain_size // CHUNK_BYTES))
    return HEADER_BYTES + plain_size + chunks * ABYTES


def _read_full(src: BinaryIO, n: int) -> bytes:
    """Read exactly ``n`` bytes unless the stream ends first (pipes return short reads)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        part = src.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    *,
    name: str,
    media_type: str = "application/octet-stream",
    key: bytes | None = None,
) -> AttachmentManifestEntry:
    """Encrypt ``src`` into ``dst`` chunk by chunk; returns the manifest entry."""
    key = key or os.urandom(32)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    digest = hashlib.sha256(header)
    dst.write(header)
    total_c = len(header)
    total_p = 0
    chunk = _read_full(src, CHUNK_BYTES)
    while True:
        nxt = _read_full(src, CHUNK_BYTES) if len(chunk) == CHUNK_BYTES else b""
        tag = TAG_FINAL if not nxt else TAG_MESSAGE
        c = sodium.crypto_secretstream_xchacha20poly1305_push(state, chunk, None, tag)
        digest.update(c)
        dst.write(c)
        total_c += len(c)
        total_p += len(chunk)
        if tag == TAG_FINAL:
            break
        chunk = nxt
    try:
        return AttachmentManifestEntry(
            h=digest.hexdigest(), n=total_c, key=b64e(key), name=name, type=media_type, size=total_p
        )
    except ValidationError as exc:
        raise AttachmentError(f"attachment {name[:40]!r}: {exc.errors()[0]['msg']}") from exc


def decrypt_stream(src: BinaryIO, dst: BinaryIO, entry: AttachmentManifestEntry) -> int:
    """Decrypt ``src`` into ``dst``, checking every tag, the length and the hash.

    Raises :class:`AttachmentError`; on error, ``dst`` holds partial output that the
    caller must discard (:func:`decrypt_file` does).
    """
    header = src.read(HEADER_BYTES)
    if len(header) != HEADER_BYTES:
        raise AttachmentError(f"attachment {entry.name} is truncated")
    digest = hashlib.sha256(header)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    try:
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, b64d(entry.key))
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise AttachmentError(f"attachment {entry.name} has an unusable key") from exc
    total_c, total_p = HEADER_BYTES, 0
    while True:
        c = _read_full(src, CHUNK_BYTES + ABYTES)
        if not c:
            raise AttachmentError(f"attachment {entry.name} is truncated (no final chunk)")
        digest.update(c)
        total_c += len(c)
        if total_c > entry.n:
            raise AttachmentError(f"attachment {entry.name} is longer than its manifest says")
        try:
            m, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, c, None)
        except nacl.exceptions.CryptoError as exc:
            raise AttachmentError(f"attachment {entry.name} fails authentication") from exc
        dst.write(m)
        total_p += len(m)
        if tag == TAG_FINAL:
            break
    if src.read(1):
        raise AttachmentError(f"attachment {entry.name} has data after its final chunk")
    if total_c != entry.n or digest.hexdigest() != entry.h or total_p != entry.size:
        raise AttachmentError(f"attachment {entry.name} does not match its manifest hash")
    return total_p


def encrypt_file(
    path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, media_type: str | None = None
) -> tuple[AttachmentManifestEntry, Path]:
    """Encrypt a file into ``out_dir/<sha256>``; returns the manifest entry and that path."""
    src_path = Path(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{src_path.name}.{os.getpid()}.part"
    try:
        with src_path.open("rb") as src, tmp.open("wb") as dst:
            entry = encrypt_stream(
                src, dst, name=src_path.name, media_type=media_type or _guess_type(src_path)
            )
        final = out / entry.h
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return entry, final


def decrypt_file(
    src_path: str | os.PathLike[str],
    entry: AttachmentManifestEntry,
    dst_path: str | os.PathLike[str],
) -> Path:
    """Decrypt into ``dst_path`` atomically: nothing appears there unless all checks pass.

    The plaintext is private: the file is created 0600, in folders made 0700."""
    dst = Path(dst_path)
    private_dir(dst.parent)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
    try:
        with Path(src_path).open("rb") as src, open_private(tmp) as out:
            decrypt_stream(src, out, entry)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def _guess_type(path: Path) -> str:
    import mimetypes

    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"
