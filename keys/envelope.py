"""Sealing and opening envelopes.

An envelope is a compact JWS (``typ: cpar-envelope+jws``):

* the **protected header** carries routing metadata only (who, when, priority,
  deadlines, wrapped content keys, attachment hashes) and is all the relay reads;
* the **payload** is ``nonce(24) || XChaCha20-Poly1305-IETF(plaintext)`` under a random
  content key, with the ASCII of the header's base64url segment as associated data;
* the content key is wrapped with ``crypto_box_seal`` for each recipient's current
  X25519 key, and for each fallback recipient (released by the relay on escalation);
* the plaintext repeats ``id``, ``from``, ``to`` and ``created`` (sender binding), so
  stripping the signature and re-signing under another identity is detected.

See ``docs/PROTOCOL.md`` for the byte-exact description.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
from pydantic import JsonValue, ValidationError

from keys.directory import Directory
from keys.encoding import Rng, b64d, b64e, dumps, uuid7
from keys.errors import (
    EncodingError,
    MessageExpiredError,
    NotYetValidError,
    RecipientKeyError,
    SenderBindingError,
    SenderKeyExpiredError,
    SenderKeyRevokedError,
    TamperedError,
    UnknownSenderError,
    UnknownSigningKeyError,
    WrongRecipientError,
)
from keys.identity import Identity
from keys.jws import CompactJWS, parse_compact, sign_compact, verify_compact
from keys.models import (
    TYP_ENVELOPE,
    AttachmentManifestEntry,
    DirectoryEntry,
    EncryptionKeyInfo,
    EnvelopeHeader,
    Plaintext,
    Priority,
)

NONCE_BYTES = 24
KEY_BYTES = 32
DEFAULT_TTL_MS = 7 * 86_400_000
MAX_CLOCK_SKEW_MS = 5 * 60_000
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
"""Largest envelope accepted: room for a 1 MiB binary payload carried as base64 in JSON."""


def envelope_hash(token: str | bytes) -> str:
    """SHA-256 (hex) of the compact envelope's ASCII bytes; receipts bind to this."""
    return hashlib.sha256(token.encode("ascii") if isinstance(token, str) else token).hexdigest()


def seal_box(message: bytes, public_key: bytes, ephemeral_seed: bytes | None = None) -> bytes:
    """``crypto_box_seal``. With ``ephemeral_seed`` the output is deterministic (vectors).

    The deterministic form builds exactly what libsodium does: ``epk || crypto_box(m,
    nonce=BLAKE2b-192(epk || pk), pk, esk)`` with ``(epk, esk)`` from the seed.
    """
    if ephemeral_seed is None:
        return nacl.bindings.crypto_box_seal(message, public_key)
    epk, esk = nacl.bindings.crypto_box_seed_keypair(ephemeral_seed)
    nonce = nacl.hash.blake2b(epk + public_key, digest_size=24, encoder=nacl.encoding.RawEncoder)
    return epk + nacl.bindings.crypto_box(message, nonce, public_key, esk)


@dataclass(frozen=True, slots=True)
class SealedEnvelope:
    token: str
    header: EnvelopeHeader
    hash: str

    @property
    def id(self) -> str:
        return self.header.id


@dataclass(frozen=True, slots=True)
class VerifiedEnvelope:
    """An envelope whose signature, sender and lifetime have been checked (relay view)."""

    jws: CompactJWS
    header: EnvelopeHeader
    sender: DirectoryEntry
    hash: str


@dataclass(frozen=True, slots=True)
class OpenedEnvelope:
    """A verified, decrypted envelope: typed header, typed plaintext, and our role."""

    header: EnvelopeHeader
    plaintext: Plaintext
    sender: DirectoryEntry
    hash: str
    role: Literal["to", "fallback"]

    @property
    def content(self) -> dict[str, JsonValue]:
        return self.plaintext.content


def seal(
    sender: Identity,
    directory: Directory,
    *,
    to: Sequence[str],
    content: Mapping[str, JsonValue],
    now: int,
    fallback: Sequence[str] = (),
    priority: Priority = "routine",
    ttl_ms: int = DEFAULT_TTL_MS,
    ack_by: int | None = None,
    handling: Sequence[str] = (),
    attachments: Sequence[AttachmentManifestEntry] = (),
    message_id: str | None = None,
    rng: Rng | None = None,
) -> SealedEnvelope:
    """Sign and encrypt ``content`` from ``sender`` to ``to`` (and ``fallback``).

    ``rng`` is for deterministic test vectors only; production (``None``) draws the
    content key, nonce and id from ``os.urandom`` and the sealed-box ephemeral key
    from libsodium.
    """
    random: Rng = rng or os.urandom
    signing = sender.signing_key(now)
    msg_id = message_id or uuid7(ms=now, rng=random)
    to_list = list(to)
    rcpt: list[JsonValue] = []
    content_key = random(KEY_BYTES)
    for role, names in (("to", to_list), ("fallback", list(fallback))):
        for aid in names:
            key = _recipient_key(directory, aid, now)
            seed = random(32) if rng is not None else None
            wrapped = seal_box(content_key, b64d(key.pk), seed)
            rcpt.append({"aid": aid, "kid": key.kid, "role": role, "wk": b64e(wrapped)})
    header_obj: dict[str, JsonValue] = {
        "alg": "Ed25519",
        "typ": TYP_ENVELOPE,
        "kid": signing.kid,
        "v": 1,
        "id": msg_id,
        "from": sender.id,
        "to": list(to_list),
        "created": now,
        "expires": now + ttl_ms,
        "prio": priority,
    }
    if ack_by is not None:
        header_obj["ack_by"] = ack_by
    header_obj["rcpt"] = rcpt
    if attachments:
        header_obj["att"] = [{"h": a.h, "n": a.n} for a in attachments]
    try:
        header = EnvelopeHeader.model_validate(header_obj)
    except ValidationError as exc:
        raise EncodingError(f"cannot seal: {_first_error(exc)}") from exc
    plain: dict[str, JsonValue] = {
        "v": 1,
        "id": msg_id,
        "from": sender.id,
        "to": list(to_list),
        "created": now,
        "handling": list(handling),
        "attachments": [a.model_dump() for a in attachments],
        "content": dict(content),
    }
    return _seal_parts(header, dumps(header_obj), dumps(plain), content_key, signing.secret, random)


def _seal_parts(
    header: EnvelopeHeader,
    header_json: bytes,
    plaintext: bytes,
    content_key: bytes,
    secret_key: bytes,
    random: Rng,
) -> SealedEnvelope:
    head_b64 = b64e(header_json)
    nonce = random(NONCE_BYTES)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, head_b64.encode("ascii"), nonce, content_key
    )
    token = sign_compact(header_json, nonce + ct, secret_key)
    return SealedEnvelope(token=token, header=header, hash=envelope_hash(token))


def _recipient_key(directory: Directory, aid: str, now: int) -> EncryptionKeyInfo:
    entry = directory.get(aid)
    if entry is None:
        raise RecipientKeyError(f"recipient {aid} is not in the directory")
    if entry.role == "relay":
        raise RecipientKeyError(f"{aid} is a relay and cannot receive messages")
    key = entry.current_encryption_key(now)
    if key is None:
        raise RecipientKeyError(f"recipient {aid} has no valid encryption key")
    return key


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{loc}: {err['msg']}"


def verify_envelope(
    token: str | bytes,
    directory: Directory,
    *,
    now: int,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> VerifiedEnvelope:
    """Check structure, sender, signature, key status and lifetime. No decryption."""
    jws = parse_compact(token, what="envelope", max_bytes=max_bytes)
    try:
        header = EnvelopeHeader.model_validate_json(jws.protected)
    except ValidationError as exc:
        raise EncodingError(f"envelope header is invalid: {_first_error(exc)}") from exc
    sender = directory.get(header.from_)
    if sender is None:
        raise UnknownSenderError(f"sender {header.from_} is not in the directory")
    owner = directory.signer(header.kid)
    if owner is None or owner[0].id != sender.id:
        raise UnknownSigningKeyError(
            f"envelope is signed with key {header.kid}, which the directory does not list "
            f"for {sender.id}"
        )
    key = owner[1]
    verify_compact(jws, b64d(key.pk), what="envelope")
    if key.revoked is not None:
        raise SenderKeyRevokedError(f"sender key {key.kid} of {sender.id} has been revoked")
    if not (key.nbf <= header.created <= key.exp and key.nbf <= now <= key.exp):
        raise SenderKeyExpiredError(f"sender key {key.kid} of {sender.id} is not valid now")
    if now >= header.expires:
        raise MessageExpiredError(f"message {header.id} expired")
    if header.created > now + max_skew_ms:
        raise NotYetValidError(f"message {header.id} is dated in the future")
    return VerifiedEnvelope(jws=jws, header=header, sender=sender, hash=envelope_hash(token))


def open_envelope(
    token: str | bytes,
    directory: Directory,
    recipient: Identity,
    *,
    now: int,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> OpenedEnvelope:
    """Verify, unwrap, decrypt and check the sender binding. Raises on any failure."""
    verified = verify_envelope(
        token, directory, now=now, max_skew_ms=max_skew_ms, max_bytes=max_bytes
    )
    header = verified.header
    secrets = {k.kid: k for k in recipient.encryption_keys if k.revoked is None}
    mine = [r for r in header.rcpt if r.aid == recipient.id and r.kid in secrets]
    if not mine:
        raise WrongRecipientError(f"message {header.id} carries no key for {recipient.id}")
    entry = mine[0]
    own = secrets[entry.kid]
    try:
        content_key = nacl.bindings.crypto_box_seal_open(b64d(entry.wk), own.public, own.secret)
    except nacl.exceptions.CryptoError as exc:
        raise TamperedError(f"wrapped key for {recipient.id} does not open") from exc
    payload = verified.jws.payload
    if len(payload) < NONCE_BYTES + 16:
        raise TamperedError("envelope ciphertext is truncated")
    try:
        plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            payload[NONCE_BYTES:],
            verified.jws.protected_b64.encode("ascii"),
            payload[:NONCE_BYTES],
            content_key,
        )
    except nacl.exceptions.CryptoError as exc:
        raise TamperedError("envelope ciphertext fails authentication") from exc
    try:
        body = Plaintext.model_validate_json(plain)
    except ValidationError as exc:
        raise EncodingError(f"decrypted payload is invalid: {_first_error(exc)}") from exc
    _check_binding(header, body)
    return OpenedEnvelope(
        header=header, plaintext=body, sender=verified.sender, hash=verified.hash, role=entry.role
    )


def _check_binding(header: EnvelopeHeader, body: Plaintext) -> None:
    for name, outer, inner in (
        ("id", header.id, body.id),
        ("from", header.from_, body.from_),
        ("to", header.to, body.to),
        ("created", header.created, body.created),
    ):
        if outer != inner:
            raise SenderBindingError(
                f"message {header.id}: the encrypted '{name}' does not match the signed header"
            )
    if [(a.h, a.n) for a in header.att] != [(a.h, a.n) for a in body.attachments]:
        raise SenderBindingError(
            f"message {header.id}: the encrypted attachment list does not match the header"
        )
