"""Signed tree heads of the relay's log, and the check that a newer head extends an
older one.

A head is a compact JWS (``typ: cpar-log-head+jws``) by a relay listed in the
directory, whose payload says how many leaves the log has (``size``), their RFC 9162
tree hash (``root``, hex) and when the relay signed it (``at``). Each leaf is one
receipt the relay stored, in commit order: the UTF-8 bytes of its compact token
(docs/PROTOCOL.md, "The relay's log").

A client keeps the newest head it verified. When it sees another, it asks the relay
for a consistency proof between the two sizes and checks it with
:func:`check_extends`: a relay that rewrote its history, or showed different
histories to different authorities, cannot produce one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from keys.directory import Directory
from keys.encoding import b64d, dumps
from keys.errors import (
    EncodingError,
    LogError,
    LogForkError,
    SenderKeyRevokedError,
    UnknownSigningKeyError,
)
from keys.identity import Identity
from keys.jws import parse_compact, sign_compact, verify_compact
from keys.merkle import MerkleError, leaf_hash, verify_consistency, verify_inclusion
from keys.models import TYP_LOG_HEAD, JwsHeader, LogHeadBody

__all__ = [
    "SignedHead",
    "check_extends",
    "check_included",
    "sign_log_head",
    "verify_log_head",
]

MAX_HEAD_BYTES = 2048


@dataclass(frozen=True, slots=True)
class SignedHead:
    token: str
    body: LogHeadBody

    @property
    def size(self) -> int:
        return self.body.size

    @property
    def root(self) -> bytes:
        return bytes.fromhex(self.body.root)


def sign_log_head(relay: Identity, *, size: int, root: bytes, now: int) -> str:
    key = relay.signing_key(now)
    body = {"v": 1, "log": relay.id, "size": size, "root": root.hex(), "at": now}
    header = dumps({"alg": "Ed25519", "typ": TYP_LOG_HEAD, "kid": key.kid})
    return sign_compact(header, dumps(body), key.secret)


def verify_log_head(token: str, directory: Directory) -> SignedHead:
    """Verify a head's signature by a relay of ``directory`` (raise :class:`LogError`
    or another :class:`keys.errors.KeysError` naming what failed)."""
    jws = parse_compact(token, what="log head", max_bytes=MAX_HEAD_BYTES)
    try:
        jh = JwsHeader.model_validate_json(jws.protected)
        body = LogHeadBody.model_validate_json(jws.payload)
    except ValidationError as exc:
        raise EncodingError(f"log head is malformed: {exc.errors()[0]['msg']}") from exc
    if jh.typ != TYP_LOG_HEAD:
        raise EncodingError(f"not a log head (typ {jh.typ!r})")
    owner = directory.signer(jh.kid)
    if owner is None:
        raise UnknownSigningKeyError(f"log head is signed by key {jh.kid}, not in the directory")
    entry, key = owner
    verify_compact(jws, b64d(key.pk), what="log head")
    if entry.role != "relay" or entry.id != body.log:
        raise LogError(f"a log head must be signed by the relay it names, not {entry.id}")
    if key.revoked is not None:
        raise SenderKeyRevokedError(f"log head signing key {key.kid} has been revoked")
    if not key.nbf <= body.at <= key.exp:
        raise LogError(f"log head signing key {key.kid} was not valid at the head's time")
    return SignedHead(token, body)


def check_extends(old: SignedHead, new: SignedHead, proof: Sequence[str]) -> None:
    """Check that ``new`` extends ``old`` (or ``old`` extends ``new``, when the relay
    shows an older head) with ``proof``, the relay's consistency proof between their
    sizes (hex hashes). Raise :class:`LogForkError` when they cannot both be true."""
    if old.body.log != new.body.log:
        raise LogError(f"log heads of two relays: {old.body.log} and {new.body.log}")
    first, second = (old, new) if old.size <= new.size else (new, old)
    try:
        hashes = [bytes.fromhex(p) for p in proof]
        verify_consistency(first.size, second.size, first.root, second.root, hashes)
    except (ValueError, MerkleError) as exc:
        raise LogForkError(
            f"the relay's log at size {second.size} does not extend its log at size "
            f"{first.size} ({exc}): its history was rewritten or forked"
        ) from None


def check_included(head: SignedHead, index: int, receipt: str, path: Sequence[str]) -> None:
    """Check that ``receipt`` (a compact token: its UTF-8 bytes are the leaf) is leaf
    ``index`` of the log ``head`` signs, by its inclusion ``path`` (hex hashes)."""
    try:
        hashes = [bytes.fromhex(p) for p in path]
        verify_inclusion(leaf_hash(receipt.encode("utf-8")), index, head.size, hashes, head.root)
    except (ValueError, MerkleError) as exc:
        raise LogError(
            f"the receipt is not leaf {index} of the log of size {head.size} ({exc})"
        ) from None
