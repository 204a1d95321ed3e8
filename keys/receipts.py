"""Receipts: signed statements about one message, verifiable offline by the sender.

A receipt is a compact JWS (``typ: cpar-receipt+jws``) whose payload binds the message
id, the envelope hash, the status, the time, the signer and an optional reason.

**Batch-signed (protocol version 2).** Receipts are signed in batches, as the TLS
batch-signing drafts do: the signing inputs (``protected.payload``) of a batch are the
leaves of an RFC 9162 Merkle tree, and the signer signs the tree's root once. Each
receipt's signature segment (``alg: cpar-batch-Ed25519``) carries its leaf index, the
batch size, its inclusion path and that one signature, so every receipt still verifies
alone, offline; a verifier checks each root signature once (:class:`RootCache`). A
single receipt is a batch of one. Receipts of protocol version 1 (one Ed25519
signature each) are refused, naming the version. Who may sign which status:

=============  ======================================================
status         signer
=============  ======================================================
accepted       a relay listed in the directory (the message is durable)
expired        a relay
escalated      a relay (``step`` says which escalation step ran)
delivered      a recipient of the message (``to`` or a released fallback)
acknowledged   a recipient; ``person`` names who took it in hand
rejected       a recipient, or a relay
=============  ======================================================
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import pydantic_core
from pydantic import ValidationError

from keys.directory import Directory
from keys.encoding import b64d, b64e, dumps, public_key
from keys.errors import (
    EncodingError,
    ReceiptError,
    SenderKeyExpiredError,
    SenderKeyRevokedError,
    TamperedError,
    UnknownSigningKeyError,
)
from keys.identity import Identity
from keys.jws import (
    CompactJWS,
    ed25519_sign,
    ed25519_verify,
    parse_compact,
    sign_compact,
    verify_compact,
)
from keys.merkle import MerkleError, leaf_hash, root_from_path, tree_paths
from keys.models import (
    TYP_RECEIPT,
    DirectoryEntry,
    EnvelopeHeader,
    JwsHeader,
    ReceiptBody,
    ReceiptHeader,
    ReceiptStatus,
)

ALG_BATCH = "cpar-batch-Ed25519"
BATCH_CONTEXT = b"cpar-receipt-batch-v2\x00"
"""Signed with the batch size (8 bytes, big-endian) and the root: no other message of
this protocol starts with it."""
MAX_BATCH = 4096
RECEIPT_VERSION = 2
RELAY_STATUSES: frozenset[str] = frozenset({"accepted", "expired", "escalated"})
RECIPIENT_STATUSES: frozenset[str] = frozenset({"delivered", "acknowledged"})
MAX_RECEIPT_BYTES = 8192
MAX_RECEIPT_SKEW_MS = 5 * 60_000


@dataclass(frozen=True, slots=True)
class Receipt:
    token: str
    body: ReceiptBody
    signer: DirectoryEntry

    @property
    def status(self) -> ReceiptStatus:
        return self.body.status


def receipt_body(
    signer: Identity,
    *,
    msg_id: str,
    envelope_hash: str,
    status: ReceiptStatus,
    now: int,
    reason: str | None = None,
    person: str | None = None,
    step: int | None = None,
) -> dict[str, object]:
    """The statement ``signer`` makes (checked; sign it with :func:`sign_receipts`)."""
    body: dict[str, object] = {
        "v": RECEIPT_VERSION,
        "msg": msg_id,
        "env": envelope_hash,
        "status": status,
        "at": now,
        "by": signer.id,
    }
    if reason is not None:
        body["reason"] = reason
    if person is not None:
        body["person"] = person
    if step is not None:
        body["step"] = step
    try:
        ReceiptBody.model_validate(body)
    except ValidationError as exc:
        raise EncodingError(f"cannot sign receipt: {exc.errors()[0]['msg']}") from exc
    return body


def sign_receipts(signer: Identity, bodies: Sequence[dict[str, object]], *, now: int) -> list[str]:
    """Sign a batch of statements (from :func:`receipt_body`) with one signature; one
    token each, in order. Each token verifies alone."""
    if not 1 <= len(bodies) <= MAX_BATCH:
        raise EncodingError(f"a receipt batch holds 1 to {MAX_BATCH} receipts")
    key = signer.signing_key(now)
    head = b64e(dumps({"alg": ALG_BATCH, "typ": TYP_RECEIPT, "kid": key.kid}))
    # The bodies are checked flat objects of strings and integers (receipt_body): the
    # Rust serialiser writes them as json.dumps would, in a fraction of the time.
    inputs = [f"{head}.{b64e(pydantic_core.to_json(body))}" for body in bodies]
    root, paths = tree_paths([leaf_hash(text.encode("ascii")) for text in inputs])
    size = len(inputs)
    signature = ed25519_sign(key.secret, _root_message(size, root))
    tail = size.to_bytes(4, "big")
    return [
        f"{text}.{b64e(i.to_bytes(4, 'big') + tail + path + signature)}"
        for i, (text, path) in enumerate(zip(inputs, paths, strict=True))
    ]


def sign_receipt(
    signer: Identity,
    *,
    msg_id: str,
    envelope_hash: str,
    status: ReceiptStatus,
    now: int,
    reason: str | None = None,
    person: str | None = None,
    step: int | None = None,
) -> str:
    """Sign one receipt as ``signer`` (an authority or the relay): a batch of one."""
    body = receipt_body(
        signer,
        msg_id=msg_id,
        envelope_hash=envelope_hash,
        status=status,
        now=now,
        reason=reason,
        person=person,
        step=step,
    )
    return sign_receipts(signer, [body], now=now)[0]


def _root_message(size: int, root: bytes) -> bytes:
    return BATCH_CONTEXT + size.to_bytes(8, "big") + root


class RootCache:
    """Batch signatures that verified, by (public key, size, root, signature): each
    batch's signature is checked once, however many of its receipts arrive. The
    signature is part of the key, so a receipt with other signature bytes is checked
    afresh (and refused). Bounded (oldest forgotten first); safe to share between threads."""

    def __init__(self, size: int = 16_384) -> None:
        self._size = size
        self._seen: dict[tuple[bytes, int, bytes, bytes], None] = {}
        self._lock = threading.Lock()

    def check(self, public_key: bytes, size: int, root: bytes, signature: bytes) -> bool:
        key = (public_key, size, root, signature)
        with self._lock:
            if key in self._seen:
                return True
        if not ed25519_verify(public_key, _root_message(size, root), signature):
            return False
        with self._lock:
            self._seen[key] = None
            while len(self._seen) > self._size:
                self._seen.pop(next(iter(self._seen)))
        return True


ROOTS = RootCache()
"""This process's cache of verified batch roots (verify_receipt's default)."""


def _verify_batch_signature(jws: CompactJWS, public_key: bytes, cache: RootCache) -> None:
    part = jws.signature
    if len(part) < 8 + 64 or (len(part) - 8 - 64) % 32:
        raise TamperedError("receipt signature is not a batch signature")
    index, size = int.from_bytes(part[:4], "big"), int.from_bytes(part[4:8], "big")
    raw = part[8:-64]
    path = [raw[i : i + 32] for i in range(0, len(raw), 32)]
    try:
        root = root_from_path(leaf_hash(jws.signing_input), index, size, path)
    except MerkleError as exc:
        raise TamperedError(f"receipt batch path does not verify ({exc})") from None
    if not cache.check(public_key, size, root, part[-64:]):
        raise TamperedError("receipt signature does not verify")


@functools.lru_cache(maxsize=256)
def _receipt_header(protected_b64: str) -> ReceiptHeader:
    """The protected header of a receipt (one per batch: parsed once, then remembered)."""
    try:
        return ReceiptHeader.model_validate_json(b64d(protected_b64, what="receipt header"))
    except ValidationError as exc:
        raise EncodingError(f"receipt is malformed: {exc.errors()[0]['msg']}") from exc


def verify_receipt(
    token: str | bytes,
    directory: Directory,
    *,
    header: EnvelopeHeader | None = None,
    envelope_hash: str | None = None,
    now: int | None = None,
    cache: RootCache = ROOTS,
) -> Receipt:
    """Verify a receipt's signature and that its signer may make its statement.

    With ``header`` (and ``envelope_hash``) it also checks that the receipt is about
    that very message and, for recipient statuses, that the signer is a recipient.
    """
    jws = parse_compact(token, what="receipt", max_bytes=MAX_RECEIPT_BYTES, batch=True)
    jh = _receipt_header(jws.protected_b64)
    if jh.typ != TYP_RECEIPT:
        raise EncodingError(f"not a receipt (typ {jh.typ!r})")
    if jh.alg != ALG_BATCH:
        raise EncodingError(
            "receipt protocol version 1 (one signature per receipt) is no longer accepted: "
            f"receipts are batch-signed ({ALG_BATCH}) since protocol version 2"
        )
    try:
        body = ReceiptBody.model_validate_json(jws.payload)
    except ValidationError as exc:
        raise EncodingError(f"receipt is malformed: {exc.errors()[0]['msg']}") from exc
    owner = directory.signer(jh.kid)
    if owner is None:
        raise UnknownSigningKeyError(f"receipt is signed by key {jh.kid}, not in the directory")
    entry, key = owner
    _verify_batch_signature(jws, public_key(key.pk), cache)
    if entry.id != body.by:
        raise TamperedError(f"receipt says it is by {body.by} but is signed by {entry.id}")
    if key.revoked is not None:
        raise SenderKeyRevokedError(f"receipt signing key {key.kid} has been revoked")
    if not key.nbf <= body.at <= key.exp:
        raise SenderKeyExpiredError(f"receipt signing key {key.kid} was not valid at its time")
    if now is not None and body.at > now + MAX_RECEIPT_SKEW_MS:
        raise ReceiptError("receipt is dated in the future")
    is_relay = entry.role == "relay"
    if body.status in RELAY_STATUSES and not is_relay:
        raise ReceiptError(f"a {body.status} receipt must be signed by a relay, not {entry.id}")
    if body.status in RECIPIENT_STATUSES and is_relay:
        raise ReceiptError(f"a {body.status} receipt must be signed by a recipient")
    if header is not None:
        if body.msg != header.id:
            raise ReceiptError(f"receipt is about message {body.msg}, not {header.id}")
        recipients = {r.aid for r in header.rcpt}
        if not is_relay and entry.id not in recipients:
            raise ReceiptError(f"{entry.id} is not a recipient of message {header.id}")
    if envelope_hash is not None and body.env != envelope_hash:
        raise ReceiptError(f"receipt is about a different envelope than message {body.msg}")
    return Receipt(
        token=token if isinstance(token, str) else token.decode("ascii"), body=body, signer=entry
    )


# --- probes -------------------------------------------------------------------------------

TYP_PROBE = "cpar-probe+jws"


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    by: str
    nonce: str
    at: int


def sign_probe(signer: Identity, *, nonce: str, now: int) -> str:
    """A daemon's signed answer to the relay's reachability probe ``nonce``."""
    key = signer.signing_key(now)
    header = dumps({"alg": "Ed25519", "typ": TYP_PROBE, "kid": key.kid})
    body = dumps({"v": 1, "probe": nonce, "by": signer.id, "at": now})
    return sign_compact(header, body, key.secret)


def verify_probe(token: str | bytes, directory: Directory, *, nonce: str, by: str) -> ProbeAnswer:
    """Check that ``by`` signed an answer to exactly this probe ``nonce``."""
    jws = parse_compact(token, what="probe answer", max_bytes=2048)
    try:
        jh = JwsHeader.model_validate_json(jws.protected)
    except ValidationError as exc:
        raise EncodingError("probe answer is malformed") from exc
    if jh.typ != TYP_PROBE:
        raise EncodingError(f"not a probe answer (typ {jh.typ!r})")
    owner = directory.signer(jh.kid)
    if owner is None or owner[0].id != by:
        raise UnknownSigningKeyError(f"probe answer is not signed by a key of {by}")
    key = owner[1]
    verify_compact(jws, b64d(key.pk), what="probe answer")
    if key.revoked is not None:
        raise SenderKeyRevokedError(f"probe answer key {key.kid} has been revoked")
    try:
        body = json.loads(jws.payload)
        answer = ProbeAnswer(by=str(body["by"]), nonce=str(body["probe"]), at=int(body["at"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise EncodingError("probe answer payload is malformed") from exc
    if answer.by != by or answer.nonce != nonce:
        raise ReceiptError("probe answer is for another probe or another authority")
    return answer
