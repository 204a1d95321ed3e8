"""Receipts: signed statements about one message, verifiable offline by the sender.

A receipt is a compact JWS (``typ: cpar-receipt+jws``) whose payload binds the message
id, the envelope hash, the status, the time, the signer and an optional reason. Who may
sign which status:

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

import json
from dataclasses import dataclass

from pydantic import ValidationError

from keys.directory import Directory
from keys.encoding import b64d, dumps
from keys.errors import (
    EncodingError,
    ReceiptError,
    SenderKeyExpiredError,
    SenderKeyRevokedError,
    TamperedError,
    UnknownSigningKeyError,
)
from keys.identity import Identity
from keys.jws import parse_compact, sign_compact, verify_compact
from keys.models import (
    TYP_RECEIPT,
    DirectoryEntry,
    EnvelopeHeader,
    JwsHeader,
    ReceiptBody,
    ReceiptStatus,
)

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
    """Sign a receipt as ``signer`` (an authority or the relay)."""
    key = signer.signing_key(now)
    body: dict[str, object] = {
        "v": 1,
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
    header = dumps({"alg": "Ed25519", "typ": TYP_RECEIPT, "kid": key.kid})
    return sign_compact(header, dumps(body), key.secret)


def verify_receipt(
    token: str | bytes,
    directory: Directory,
    *,
    header: EnvelopeHeader | None = None,
    envelope_hash: str | None = None,
    now: int | None = None,
) -> Receipt:
    """Verify a receipt's signature and that its signer may make its statement.

    With ``header`` (and ``envelope_hash``) it also checks that the receipt is about
    that very message and, for recipient statuses, that the signer is a recipient.
    """
    jws = parse_compact(token, what="receipt", max_bytes=MAX_RECEIPT_BYTES)
    try:
        jh = JwsHeader.model_validate_json(jws.protected)
        body = ReceiptBody.model_validate_json(jws.payload)
    except ValidationError as exc:
        raise EncodingError(f"receipt is malformed: {exc.errors()[0]['msg']}") from exc
    if jh.typ != TYP_RECEIPT:
        raise EncodingError(f"not a receipt (typ {jh.typ!r})")
    owner = directory.signer(jh.kid)
    if owner is None:
        raise UnknownSigningKeyError(f"receipt is signed by key {jh.kid}, not in the directory")
    entry, key = owner
    verify_compact(jws, b64d(key.pk), what="receipt")
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
