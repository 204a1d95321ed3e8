"""The keystore: an identity's private keys, encrypted at rest under a passphrase.

File format (JSON, mode 0600)::

    {"format": "cpar-keystore", "v": 1, "kind": "authority", "id": "it-tpc",
     "kdf": {"alg": "argon2id13", "ops": 3, "mem": 268435456, "salt": "<b64url 16>"},
     "nonce": "<b64url 24>", "ct": "<b64url>"}

``ct`` is XChaCha20-Poly1305-IETF over the private JSON, keyed by
``argon2id(passphrase, salt, ops, mem)`` with the associated data
``"cpar-keystore-v1\\n" kind "\\n" id``. A file readable by group or others is refused
before the passphrase is even asked for. Writes are atomic (temp file, fsync, rename).
"""

from __future__ import annotations

import getpass
import json
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import nacl.bindings
import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
from pydantic import BaseModel, ConfigDict, ValidationError

from keys.encoding import b64d, b64e
from keys.errors import (
    EncodingError,
    KeystoreError,
    KeystorePermissionError,
    PassphraseUnavailableError,
    WrongPassphraseError,
)
from keys.identity import EncryptionKey, Identity, IdentityKind, SigningKey

PASSPHRASE_ENV = "CPAR_KEYSTORE_PASSPHRASE"  # noqa: S105 - a variable name
"""Default environment variable holding a keystore passphrase."""

KdfStrength = Literal["moderate", "interactive", "test"]
_KDF_LIMITS: dict[str, tuple[int, int]] = {
    "moderate": (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),  # ~256 MiB
    "interactive": (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE),  # 64 MiB
    "test": (argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN),  # for test suites only
}


_MAX_OPS = 16
_MAX_MEM = 2 * 1024 * 1024 * 1024  # a crafted file must not make opening it unbounded


class _Kdf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    alg: Literal["argon2id13"]
    ops: int
    mem: int
    salt: str


class _KeystoreFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["cpar-keystore"]
    v: Literal[1]
    kind: IdentityKind
    id: str
    kdf: _Kdf
    nonce: str
    ct: str


def _aad(kind: str, ident: str) -> bytes:
    return f"cpar-keystore-v1\n{kind}\n{ident}".encode()


def _derive(passphrase: str, salt: bytes, ops: int, mem: int) -> bytes:
    return argon2id.kdf(32, passphrase.encode("utf-8"), salt, opslimit=ops, memlimit=mem)


def _private_json(identity: Identity) -> bytes:
    doc = {
        "signing_keys": [
            {"seed": b64e(k.seed), "nbf": k.nbf, "exp": k.exp, "revoked": k.revoked}
            for k in identity.signing_keys
        ],
        "encryption_keys": [
            {
                "sk": b64e(k.secret),
                "nbf": k.nbf,
                "exp": k.exp,
                "revoked": k.revoked,
                "signer": k.signer,
                "sig": b64e(k.sig),
            }
            for k in identity.encryption_keys
        ],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _identity_from(kind: IdentityKind, ident: str, raw: Mapping[str, Any]) -> Identity:
    signing = tuple(
        SigningKey(seed=b64d(k["seed"]), nbf=k["nbf"], exp=k["exp"], revoked=k["revoked"])
        for k in raw["signing_keys"]
    )
    enc = tuple(
        EncryptionKey(
            secret=b64d(k["sk"]),
            nbf=k["nbf"],
            exp=k["exp"],
            revoked=k["revoked"],
            signer=k["signer"],
            sig=b64d(k["sig"]),
        )
        for k in raw["encryption_keys"]
    )
    return Identity(id=ident, kind=kind, signing_keys=signing, encryption_keys=enc)


def save_keystore(
    path: str | os.PathLike[str],
    identity: Identity,
    passphrase: str,
    *,
    strength: KdfStrength = "moderate",
    overwrite: bool = False,
) -> Path:
    """Encrypt ``identity`` under ``passphrase`` and write it atomically with mode 0600."""
    if not passphrase:
        raise KeystoreError("refusing an empty passphrase")
    target = Path(path)
    if target.exists() and not overwrite:
        raise KeystoreError(f"{target} already exists; refusing to overwrite it")
    ops, mem = _KDF_LIMITS[strength]
    _write(target, identity, passphrase, ops, mem)
    return target


def update_keystore(path: str | os.PathLike[str], identity: Identity, passphrase: str) -> Path:
    """Rewrite an existing keystore with new content, keeping its argon2id cost."""
    target = Path(path)
    doc = _load_file(target)
    if (doc.kind, doc.id) != (identity.kind, identity.id):
        raise KeystoreError(f"{target} holds {doc.kind} {doc.id}, not {identity.id}")
    _write(target, identity, passphrase, doc.kdf.ops, doc.kdf.mem)
    return target


def _write(target: Path, identity: Identity, passphrase: str, ops: int, mem: int) -> None:
    salt = os.urandom(argon2id.SALTBYTES)
    nonce = os.urandom(24)
    key = _derive(passphrase, salt, ops, mem)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        _private_json(identity), _aad(identity.kind, identity.id), nonce, key
    )
    doc = _KeystoreFile(
        format="cpar-keystore",
        v=1,
        kind=identity.kind,
        id=identity.id,
        kdf=_Kdf(alg="argon2id13", ops=ops, mem=mem, salt=b64e(salt)),
        nonce=b64e(nonce),
        ct=b64e(ct),
    )
    write_private_file(target, doc.model_dump_json(indent=2).encode() + b"\n")


def write_private_file(target: Path, data: bytes) -> None:
    """Atomically replace ``target`` with ``data``, created 0600 from the first byte."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeystoreError(f"cannot write {target}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_permissions(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError as exc:
        raise KeystoreError(f"keystore {path} does not exist") from exc
    if mode & 0o077:
        raise KeystorePermissionError(
            f"keystore {path} is readable by group or others (mode {mode:04o}); "
            f"run: chmod 600 {path}"
        )


def read_keystore_header(path: str | os.PathLike[str]) -> tuple[IdentityKind, str]:
    """The unencrypted kind and id of a keystore, after the permission check."""
    doc = _load_file(Path(path))
    return doc.kind, doc.id


def _load_file(path: Path) -> _KeystoreFile:
    check_permissions(path)
    try:
        return _KeystoreFile.model_validate_json(path.read_bytes())
    except (ValidationError, OSError) as exc:
        raise KeystoreError(f"{path} is not a readable keystore file") from exc


def load_keystore(path: str | os.PathLike[str], passphrase: str) -> Identity:
    """Open a keystore. Raises on loose permissions, a wrong passphrase, or corruption."""
    file = Path(path)
    doc = _load_file(file)
    try:
        salt, nonce, ct = b64d(doc.kdf.salt), b64d(doc.nonce), b64d(doc.ct)
    except EncodingError as exc:
        raise KeystoreError(f"{file} is corrupt") from exc
    if len(salt) != argon2id.SALTBYTES or len(nonce) != 24:
        raise KeystoreError(f"{file} is corrupt")
    if not (1 <= doc.kdf.ops <= _MAX_OPS and 8192 <= doc.kdf.mem <= _MAX_MEM):
        raise KeystoreError(f"{file} asks for argon2id parameters outside the accepted range")
    try:
        key = _derive(passphrase, salt, doc.kdf.ops, doc.kdf.mem)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise KeystoreError(f"{file} has unusable key-derivation parameters") from exc
    try:
        plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ct, _aad(doc.kind, doc.id), nonce, key
        )
    except nacl.exceptions.CryptoError as exc:
        raise WrongPassphraseError(
            f"the passphrase does not open {file} (or the file was altered)"
        ) from exc
    try:
        return _identity_from(doc.kind, doc.id, json.loads(plain))
    except (KeyError, TypeError, ValueError, EncodingError) as exc:
        raise KeystoreError(f"{file} decrypted but its content is invalid") from exc


def resolve_passphrase(
    *,
    env: str | None = PASSPHRASE_ENV,
    file: str | os.PathLike[str] | None = None,
    prompt: str | None = "Keystore passphrase: ",
    confirm: bool = False,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Find the passphrase: a file if given, else the env variable, else a TTY prompt."""
    environ = os.environ if environ is None else environ
    if file is not None:
        fpath = Path(file)
        try:
            text = fpath.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise PassphraseUnavailableError(f"cannot read passphrase file {fpath}") from exc
        if not text:
            raise PassphraseUnavailableError(f"passphrase file {fpath} is empty")
        return text
    if env and environ.get(env):
        return environ[env]
    if prompt is not None and sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if confirm and getpass.getpass("Repeat passphrase: ") != first:
            raise PassphraseUnavailableError("the passphrases do not match")
        if not first:
            raise PassphraseUnavailableError("empty passphrase")
        return first
    raise PassphraseUnavailableError(
        f"no passphrase: set {env or PASSPHRASE_ENV}, pass --passphrase-file, or run on a terminal"
    )
