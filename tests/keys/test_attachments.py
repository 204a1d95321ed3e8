"""Attachments: streamed secretstream encryption, stored by ciphertext hash, fail closed."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from keys.attachments import (
    ABYTES,
    CHUNK_BYTES,
    HEADER_BYTES,
    ciphertext_size,
    decrypt_file,
    encrypt_file,
)
from keys.encoding import b64e
from keys.envelope import open_envelope, seal, verify_envelope
from keys.errors import AttachmentError
from keys.models import AttachmentManifestEntry, AttachmentRef
from tests.netfixture import NOW, Network

MIB = 1024 * 1024
CIPHER_CHUNK = CHUNK_BYTES + ABYTES
SIZES = [0, 1, 65535, 65536, 65537, 3 * 65536 + 5]


def _write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def _encrypt(
    tmp_path: Path, size: int, name: str = "photo.jpg"
) -> tuple[bytes, AttachmentManifestEntry, Path]:
    src = tmp_path / "src" / name
    src.parent.mkdir(exist_ok=True)
    data = _write_random(src, size)
    entry, ct_path = encrypt_file(src, tmp_path / "store")
    return data, entry, ct_path


# --- round trip ------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(tmp_path: Path, size: int) -> None:
    data, entry, ct_path = _encrypt(tmp_path, size)
    ct = ct_path.read_bytes()
    assert entry.n == len(ct) == ct_path.stat().st_size == ciphertext_size(size)
    assert entry.size == size
    assert entry.name == "photo.jpg" and entry.type == "image/jpeg"
    # Stored under the SHA-256 of the ciphertext, with nothing else left in the store.
    assert ct_path.name == entry.h == hashlib.sha256(ct).hexdigest()
    assert [p.name for p in ct_path.parent.iterdir()] == [entry.h]
    # The ciphertext does not contain the plaintext.
    if size >= 16:
        assert data[:16] not in ct and data[-16:] not in ct
    out = tmp_path / "out" / "photo.jpg"
    out.parent.mkdir()
    assert decrypt_file(ct_path, entry, out) == out
    assert out.read_bytes() == data
    assert [p.name for p in out.parent.iterdir()] == ["photo.jpg"]


def test_ciphertext_size_counts_one_tag_per_chunk() -> None:
    assert HEADER_BYTES == 24 and ABYTES == 17 and CHUNK_BYTES == 65536
    assert ciphertext_size(0) == 24 + 17
    assert ciphertext_size(65536) == 24 + 65536 + 17
    assert ciphertext_size(65537) == 24 + 65537 + 2 * 17
    assert ciphertext_size(3 * 65536 + 5) == 24 + 3 * 65536 + 5 + 4 * 17


def test_the_same_file_encrypts_under_a_fresh_key_each_time(tmp_path: Path) -> None:
    src = tmp_path / "notice.pdf"
    _write_random(src, 1000)
    a, a_path = encrypt_file(src, tmp_path / "store")
    b, b_path = encrypt_file(src, tmp_path / "store")
    assert a.key != b.key and a.h != b.h and a_path != b_path
    assert a.type == "application/pdf"


# --- tampering -------------------------------------------------------------------------

Tamper = Callable[[bytes, AttachmentManifestEntry], tuple[bytes, AttachmentManifestEntry]]


def _flip(offset: int) -> Tamper:
    def tamper(ct: bytes, entry: AttachmentManifestEntry) -> tuple[bytes, AttachmentManifestEntry]:
        pos = offset % len(ct)
        return ct[:pos] + bytes([ct[pos] ^ 0x01]) + ct[pos + 1 :], entry

    return tamper


def _drop_final_chunk(
    ct: bytes, entry: AttachmentManifestEntry
) -> tuple[bytes, AttachmentManifestEntry]:
    cut = HEADER_BYTES + 3 * CIPHER_CHUNK
    assert len(ct) == cut + 5 + ABYTES  # 3 full chunks and a final 5-byte one
    return ct[:cut], entry


def _drop_final_chunk_and_fix_manifest(
    ct: bytes, entry: AttachmentManifestEntry
) -> tuple[bytes, AttachmentManifestEntry]:
    """The attacker who also controls the manifest: n and h match, the final tag is gone."""
    short, _ = _drop_final_chunk(ct, entry)
    return short, entry.model_copy(
        update={"n": len(short), "h": hashlib.sha256(short).hexdigest(), "size": 3 * CHUNK_BYTES}
    )


def _append(ct: bytes, entry: AttachmentManifestEntry) -> tuple[bytes, AttachmentManifestEntry]:
    return ct + b"\x00extra", entry


def _wrong_key(ct: bytes, entry: AttachmentManifestEntry) -> tuple[bytes, AttachmentManifestEntry]:
    return ct, entry.model_copy(update={"key": b64e(os.urandom(32))})


def _wrong_hash(ct: bytes, entry: AttachmentManifestEntry) -> tuple[bytes, AttachmentManifestEntry]:
    other = hashlib.sha256(ct + b"x").hexdigest()
    return ct, entry.model_copy(update={"h": other})


def _wrong_length(
    ct: bytes, entry: AttachmentManifestEntry
) -> tuple[bytes, AttachmentManifestEntry]:
    return ct, entry.model_copy(update={"n": entry.n + 1})


def _header_only(
    ct: bytes, entry: AttachmentManifestEntry
) -> tuple[bytes, AttachmentManifestEntry]:
    return ct[:HEADER_BYTES], entry


def _half_header(
    ct: bytes, entry: AttachmentManifestEntry
) -> tuple[bytes, AttachmentManifestEntry]:
    return ct[: HEADER_BYTES // 2], entry


LAST_CHUNK = HEADER_BYTES + 3 * CIPHER_CHUNK
TAMPERINGS: dict[str, Tamper] = {
    "flip-header-first": _flip(0),
    "flip-header-last": _flip(HEADER_BYTES - 1),
    "flip-first-chunk": _flip(HEADER_BYTES + 7),
    "flip-middle-chunk": _flip(HEADER_BYTES + CIPHER_CHUNK + CIPHER_CHUNK // 2),
    "flip-last-chunk-tag": _flip(LAST_CHUNK),  # the encrypted tag byte of the final chunk
    "flip-last-chunk-mac": _flip(-1),
    "truncate-drop-final-chunk": _drop_final_chunk,
    "truncate-and-rewrite-manifest": _drop_final_chunk_and_fix_manifest,
    "truncate-header-only": _header_only,
    "truncate-inside-header": _half_header,
    "append-bytes": _append,
    "wrong-key": _wrong_key,
    "wrong-hash": _wrong_hash,
    "wrong-length": _wrong_length,
}


@pytest.mark.parametrize("how", list(TAMPERINGS))
def test_tampering_is_refused_and_leaves_nothing_behind(tmp_path: Path, how: str) -> None:
    _data, entry, ct_path = _encrypt(tmp_path, 3 * CHUNK_BYTES + 5)
    ct, bad_entry = TAMPERINGS[how](ct_path.read_bytes(), entry)
    assert (ct, bad_entry) != (ct_path.read_bytes(), entry)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(ct)
    dest = tmp_path / "inbox"
    dest.mkdir()
    with pytest.raises(AttachmentError):
        decrypt_file(bad, bad_entry, dest / "photo.jpg")
    assert list(dest.iterdir()) == []
    # The untouched ciphertext still opens with the untouched manifest.
    decrypt_file(ct_path, entry, dest / "photo.jpg")
    assert (dest / "photo.jpg").read_bytes() == _data


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES])
def test_tampering_single_chunk_attachments(tmp_path: Path, size: int) -> None:
    _data, entry, ct_path = _encrypt(tmp_path, size)
    ct = ct_path.read_bytes()
    dest = tmp_path / "inbox"
    dest.mkdir()
    for bad_ct in (
        ct[:-1],
        ct + b"\x00",
        ct[:HEADER_BYTES] + bytes([ct[HEADER_BYTES] ^ 0x80]) + ct[HEADER_BYTES + 1 :],
    ):
        bad = tmp_path / "bad.bin"
        bad.write_bytes(bad_ct)
        with pytest.raises(AttachmentError):
            decrypt_file(bad, entry, dest / "x")
        assert list(dest.iterdir()) == []


def test_a_failed_decryption_keeps_an_existing_file_intact(tmp_path: Path) -> None:
    _data, entry, ct_path = _encrypt(tmp_path, 70_000)
    dest = tmp_path / "inbox" / "photo.jpg"
    dest.parent.mkdir()
    dest.write_bytes(b"the previous download")
    with pytest.raises(AttachmentError):
        decrypt_file(ct_path, entry.model_copy(update={"key": b64e(os.urandom(32))}), dest)
    assert dest.read_bytes() == b"the previous download"
    assert [p.name for p in dest.parent.iterdir()] == ["photo.jpg"]


# --- streaming -------------------------------------------------------------------------


def _peak_during(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_100_mib_attachment_is_streamed(tmp_path: Path) -> None:
    size = 100 * MIB
    src = tmp_path / "archive.tar"
    digest = hashlib.sha256()
    with src.open("wb") as fh:
        for _ in range(100):
            block = os.urandom(MIB)
            digest.update(block)
            fh.write(block)
    store, out = tmp_path / "store", tmp_path / "out" / "archive.tar"
    out.parent.mkdir()
    result: list[tuple[AttachmentManifestEntry, Path]] = []
    try:
        enc_peak = _peak_during(lambda: result.append(encrypt_file(src, store)))
        entry, ct_path = result[0]
        assert entry.size == size and entry.n == ct_path.stat().st_size == ciphertext_size(size)
        dec_peak = _peak_during(lambda: decrypt_file(ct_path, entry, out))
        assert enc_peak < 8 * MIB, f"encrypt_file peaked at {enc_peak / MIB:.1f} MiB"
        assert dec_peak < 8 * MIB, f"decrypt_file peaked at {dec_peak / MIB:.1f} MiB"
        check = hashlib.sha256()
        with out.open("rb") as fh:
            while block := fh.read(MIB):
                check.update(block)
        assert check.hexdigest() == digest.hexdigest()
    finally:
        for path in (src, out, *(store.iterdir() if store.exists() else ())):
            path.unlink(missing_ok=True)


def test_the_memory_probe_sees_a_whole_file_read(tmp_path: Path) -> None:
    """Guards the streaming test: reading 16 MiB at once must show up in the peak."""
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:
        for _ in range(16):
            fh.write(os.urandom(MIB))
    assert _peak_during(big.read_bytes) >= 16 * MIB
    big.unlink()


# --- attachments in an envelope ------------------------------------------------------


def test_an_attachment_referenced_in_an_envelope(tmp_path: Path, net: Network) -> None:
    data, entry, ct_path = _encrypt(tmp_path, 2 * CHUNK_BYTES + 123, name="stolen-icon.png")
    sealed = seal(
        net["it-tpc"],
        net.directory,
        to=["fr-oclcc"],
        content={"subject": "Stolen icon", "body": "see the attached photograph"},
        now=NOW,
        attachments=[entry],
    )
    # The relay sees only the hash and length of the ciphertext, never the key or name.
    relay_view = verify_envelope(sealed.token, net.directory, now=NOW)
    assert relay_view.header.att == [AttachmentRef(h=entry.h, n=entry.n)]
    assert entry.key not in sealed.token.split(".")[0]

    opened = open_envelope(sealed.token, net.directory, net["fr-oclcc"], now=NOW + 1000)
    assert opened.plaintext.attachments == [entry]
    assert [(a.h, a.n) for a in opened.header.att] == [(entry.h, entry.n)]

    # The receiver fetches the ciphertext by hash and decrypts it with the opened manifest.
    received = opened.plaintext.attachments[0]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    dest = decrypt_file(ct_path.parent / received.h, received, inbox / received.name)
    assert dest.read_bytes() == data
    assert [p.name for p in inbox.iterdir()] == ["stolen-icon.png"]
