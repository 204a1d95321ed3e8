"""Evidence bundles: everything needed to prove, offline and with nothing but the network's
root key, what was sent, when, and what became of it (docs/PROTOCOL.md §6.5).

A bundle is one JSON file in canonical form (keys sorted, two-space indent, ASCII, one
final newline). Its ``evidence`` member holds the envelope as the relay accepted it,
every receipt of the message with its inclusion path in the relay's log, the signed
tree head the paths lead to, the newest head the exporting authority held with the
consistency proof joining the two, and the directory versions (and root rotations)
that make every key checkable from the root. ``signature`` is the exporting
authority's detached JWS over the canonical compact JSON of ``evidence``.

:func:`verify_bundle` checks every byte: the canonical form (so any edit shows), the
directory chain from the root, the exporter's signature, the envelope's signature, each
receipt's signature and its statement about this envelope, each inclusion path, the
head signatures and the consistency proof. It returns a :class:`Proven` summary, or
raises a :class:`keys.errors.KeysError` whose message names what failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from keys.directory import Directory, DirectoryPin
from keys.encoding import b64d, b64e, dumps
from keys.envelope import VerifiedEnvelope, verify_envelope
from keys.errors import (
    EncodingError,
    KeysError,
    LogError,
    ReceiptError,
    SenderKeyExpiredError,
    SenderKeyRevokedError,
    TamperedError,
)
from keys.identity import Identity
from keys.jws import parse_compact, sign_compact, unverified_header, verify_compact
from keys.loghead import SignedHead, check_extends, check_included, verify_log_head
from keys.models import JwsHeader
from keys.receipts import Receipt, verify_receipt

__all__ = [
    "TYP_EVIDENCE",
    "Bundle",
    "Entry",
    "EvidenceError",
    "Proven",
    "build_bundle",
    "verify_bundle",
]

TYP_EVIDENCE = "cpar-evidence+jws"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
T = TypeVar("T")
Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Token = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+$")
]


class EvidenceError(KeysError):
    """The file is not an evidence bundle this software can check, or a part fails."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Entry(_Strict):
    receipt: Token
    index: int = Field(ge=0, lt=2**53)
    path: list[Hex]


class Directories(_Strict):
    versions: list[Token] = Field(min_length=1)
    rotations: list[Token] = []


class Evidence(_Strict):
    type: Literal["cpar-evidence"]
    v: Literal[1]
    envelope: Token
    receipts: list[Entry] = Field(min_length=1)
    head: Token
    newest_head: Token
    consistency: list[Hex]
    directory: Directories
    exported_at: int = Field(ge=0, lt=2**53)


class Bundle(_Strict):
    evidence: Evidence
    signature: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+\.\.[A-Za-z0-9_-]+$")]


def canonical(obj: Any) -> bytes:
    """The one byte form a bundle file may have."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def _payload(evidence: Evidence) -> bytes:
    return json.dumps(
        evidence.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode()


def build_bundle(
    exporter: Identity,
    *,
    envelope: str,
    receipts: Sequence[tuple[int, str, Sequence[str]]],
    head: str,
    newest_head: str,
    consistency: Sequence[str],
    versions: Sequence[str],
    rotations: Sequence[str] = (),
    now: int,
) -> bytes:
    """The canonical bytes of a bundle, signed by ``exporter`` (the authority exporting it)."""
    evidence = Evidence(
        type="cpar-evidence",
        v=1,
        envelope=envelope,
        receipts=[Entry(receipt=r, index=i, path=list(p)) for i, r, p in receipts],
        head=head,
        newest_head=newest_head,
        consistency=list(consistency),
        directory=Directories(versions=list(versions), rotations=list(rotations)),
        exported_at=now,
    )
    key = exporter.signing_key(now)
    header = dumps({"alg": "Ed25519", "typ": TYP_EVIDENCE, "kid": key.kid})
    protected, _, sig = sign_compact(header, _payload(evidence), key.secret).split(".")
    bundle = Bundle(evidence=evidence, signature=f"{protected}..{sig}")
    return canonical(bundle.model_dump(mode="json"))


@dataclass(frozen=True, slots=True)
class Proven:
    """What a verified bundle proves."""

    envelope: VerifiedEnvelope
    receipts: tuple[Receipt, ...]
    head: SignedHead
    newest_head: SignedHead
    exporter: str
    exported_at: int
    root_kid: str
    directory_version: int

    def statements(self) -> list[tuple[str, str, int, str]]:
        """(what, by whom, when, detail): the sending, then every receipt in order."""
        h = self.envelope.header
        out = [("sent", h.from_, h.created, f"to {', '.join(h.to)}")]
        for r in self.receipts:
            b = r.body
            detail = [f"({b.person})" if b.person else "", f"step {b.step}" if b.step else ""]
            detail.append(f"reason: {b.reason}" if b.reason else "")
            out.append((r.status, b.by, b.at, " ".join(d for d in detail if d)))
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "verified": True,
            "message": self.envelope.header.id,
            "envelope_hash": self.envelope.hash,
            "statements": [
                {"status": s, "by": by, "at": at, "detail": d} for s, by, at, d in self.statements()
            ],
            "log": self.head.body.log,
            "log_size": self.head.size,
            "newest_log_size": self.newest_head.size,
            "exported_by": self.exporter,
            "exported_at": self.exported_at,
            "root_kid": self.root_kid,
            "directory_version": self.directory_version,
        }


def _in_some_version(
    directories: Sequence[Directory], check: Callable[[Directory], T], what: str
) -> T:
    """``check`` against the newest directory version it passes in (a key revoked or
    removed later was valid when the statement was made)."""
    first: KeysError | None = None
    for directory in reversed(directories):
        try:
            return check(directory)
        except SenderKeyRevokedError as exc:
            # Revoked is for every purpose, earlier signatures included: no fallback.
            raise SenderKeyRevokedError(f"{what}: {exc}") from None
        except KeysError as exc:
            first = first or exc
    assert first is not None
    raise type(first)(f"{what}: {first}")


def _receipt_check(token: str, envelope: VerifiedEnvelope) -> Callable[[Directory], Receipt]:
    return lambda d: verify_receipt(token, d, header=envelope.header, envelope_hash=envelope.hash)


def verify_bundle(data: bytes, roots: Sequence[bytes]) -> Proven:
    """Check a bundle file's bytes against the network root key(s); see the module doc."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise EvidenceError(f"the file is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        bundle = Bundle.model_validate(json.loads(data))
    except RecursionError:
        raise EvidenceError("not an evidence bundle: nested too deeply") from None
    except ValueError as exc:
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise EvidenceError(f"not an evidence bundle: {reason}") from None
    # The bytes are those of every member as written (defaults included): nothing can be
    # added, left out or reformatted.
    if canonical(bundle.model_dump(mode="json")) != data:
        raise EvidenceError(
            "the file is not in the canonical form it was written in: it was changed"
        )
    ev = bundle.evidence

    # The directory, from the root.
    pin = DirectoryPin(list(roots))
    try:
        pin.follow(ev.directory.rotations)
        directories = [pin.accept(v) for v in ev.directory.versions]
    except KeysError as exc:
        raise type(exc)(f"directory: {exc}") from None
    newest = directories[-1]

    # Who exported it.
    protected, _, sig = bundle.signature.split(".")
    jws = parse_compact(f"{protected}.{b64e(_payload(ev))}.{sig}", what="bundle signature")
    try:
        jh = JwsHeader.model_validate_json(jws.protected)
    except ValidationError as exc:
        raise EvidenceError(f"bundle signature header: {exc.errors()[0]['msg']}") from None
    if jh.typ != TYP_EVIDENCE:
        raise EvidenceError(f"bundle signature: not an evidence signature (typ {jh.typ!r})")

    def exporter_check(d: Directory) -> tuple[str, int]:
        owner = d.signer(jh.kid)
        if owner is None:
            raise EvidenceError(f"key {jh.kid} is not in directory version {d.version}")
        verify_compact(jws, b64d(owner[1].pk), what="bundle")
        if owner[1].revoked is not None:
            raise SenderKeyRevokedError(f"the exporter's key {jh.kid} has been revoked")
        if not owner[1].nbf <= ev.exported_at <= owner[1].exp:
            raise SenderKeyExpiredError(f"the exporter's key {jh.kid} was not valid at export")
        return owner[0].id, d.version

    exporter, _ = _in_some_version(directories, exporter_check, "the exporter's signature")

    # The envelope: signed by its sender, as accepted.
    created = unverified_header(ev.envelope, what="envelope").get("created")
    if not isinstance(created, int):
        raise EncodingError("envelope: its header has no creation time")
    envelope = _in_some_version(
        directories, lambda d: verify_envelope(ev.envelope, d, now=created), "envelope"
    )

    # The log heads, and that the newer extends the older.
    head = _in_some_version(directories, lambda d: verify_log_head(ev.head, d), "log head")
    held = _in_some_version(
        directories, lambda d: verify_log_head(ev.newest_head, d), "newest log head"
    )
    if held.size < head.size:
        raise LogError("the newest head is older than the head the proofs lead to")
    check_extends(head, held, ev.consistency)

    # Every receipt: signed, about this envelope, in the log.
    receipts = []
    for n, e in enumerate(ev.receipts, 1):
        r = _in_some_version(directories, _receipt_check(e.receipt, envelope), f"receipt {n}")
        if r.signer.role == "relay" and r.body.by != head.body.log:
            raise ReceiptError(f"receipt {n} is by relay {r.body.by}, not {head.body.log}")
        try:
            check_included(head, e.index, e.receipt, e.path)
        except LogError as exc:
            raise LogError(f"receipt {n}: {exc}") from None
        receipts.append(r)
    if receipts[0].status != "accepted":
        raise ReceiptError("the first receipt is not the relay's accepted receipt")
    if len({e.index for e in ev.receipts}) != len(ev.receipts):
        raise TamperedError("two receipts claim the same place in the log")
    return Proven(
        envelope=envelope,
        receipts=tuple(receipts),
        head=head,
        newest_head=held,
        exporter=exporter,
        exported_at=ev.exported_at,
        root_kid=newest.root_kid,
        directory_version=newest.version,
    )
