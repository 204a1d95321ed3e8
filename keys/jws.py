"""JWS compact serialisation (RFC 7515) with Ed25519 only (RFC 9864 ``Ed25519``).

Every signed object in the protocol (envelope, receipt, directory) is a compact JWS:
``BASE64URL(protected) '.' BASE64URL(payload) '.' BASE64URL(signature)``. The signature
covers the ASCII bytes of the first two parts exactly as transmitted, so nothing is
ever canonicalised. We emit ``alg: "Ed25519"`` and accept ``"EdDSA"`` on input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import nacl.bindings
import nacl.exceptions

from keys.encoding import b64d, b64e, check_b64
from keys.errors import EncodingError, TamperedError

SIGNATURE_BYTES = 64


@dataclass(frozen=True, slots=True)
class CompactJWS:
    """A compact JWS split into its parts; nothing has been verified yet. The encoding
    of the header and payload has been checked; each is decoded when asked for (a relay
    verifying an envelope never needs its ciphertext; a batch of receipts shares one
    header)."""

    protected_b64: str
    payload_b64: str
    signature: bytes

    @property
    def protected(self) -> bytes:
        return b64d(self.protected_b64)

    @property
    def payload(self) -> bytes:
        return b64d(self.payload_b64)

    @property
    def signing_input(self) -> bytes:
        return f"{self.protected_b64}.{self.payload_b64}".encode("ascii")


def ed25519_sign(secret_key: bytes, message: bytes) -> bytes:
    """Detached Ed25519 signature with a 64-byte libsodium secret key."""
    return nacl.bindings.crypto_sign(message, secret_key)[:SIGNATURE_BYTES]


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(signature) != SIGNATURE_BYTES or len(public_key) != 32:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def sign_compact(protected: bytes, payload: bytes, secret_key: bytes) -> str:
    """Produce ``protected.payload.signature`` from raw header JSON and payload bytes."""
    head = b64e(protected)
    body = b64e(payload)
    signing_input = f"{head}.{body}".encode("ascii")
    return f"{head}.{body}.{b64e(ed25519_sign(secret_key, signing_input))}"


def split_compact(token: str, *, what: str) -> tuple[str, str, str]:
    """The three base64url parts of a compact JWS, undecoded and unverified.

    The one place a token is split: everything else goes through this module.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise EncodingError(f"{what} is not a compact JWS (expected 3 dot-separated parts)")
    return parts[0], parts[1], parts[2]


def unverified_header(token: str, *, what: str) -> dict[str, Any]:
    """The protected header of a compact JWS, NOT verified: for metadata only."""
    return _json_object(b64d(split_compact(token, what=what)[0], what=f"{what} header"), what)


def unverified_payload(token: str, *, what: str) -> dict[str, Any]:
    """The JSON payload of a compact JWS, NOT verified: for metadata only."""
    return _json_object(b64d(split_compact(token, what=what)[1], what=f"{what} payload"), what)


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise EncodingError(f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise EncodingError(f"{what} is not a JSON object")
    return value


def parse_compact(
    token: str | bytes, *, what: str, max_bytes: int | None = None, batch: bool = False
) -> CompactJWS:
    """Split and base64url-decode a compact JWS. Raises :class:`EncodingError`. With
    ``batch`` the signature segment may be a batch signature (longer than 64 bytes;
    keys/receipts.py checks its structure)."""
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError as exc:
            raise EncodingError(f"{what} is not ASCII") from exc
    if max_bytes is not None and len(token) > max_bytes:
        raise EncodingError(f"{what} is larger than {max_bytes} bytes")
    head, body, sig = split_compact(token, what=what)
    signature = b64d(sig, what=f"{what} signature")
    if len(signature) != SIGNATURE_BYTES and not (batch and len(signature) > SIGNATURE_BYTES):
        raise TamperedError(f"{what} signature has the wrong length")
    check_b64(head, what=f"{what} protected header")
    check_b64(body, what=f"{what} payload")
    return CompactJWS(protected_b64=head, payload_b64=body, signature=signature)


def verify_compact(jws: CompactJWS, public_key: bytes, *, what: str) -> None:
    if not ed25519_verify(public_key, jws.signing_input, jws.signature):
        raise TamperedError(f"{what} signature does not verify")
