"""Wire models: every JSON object the protocol signs, validated strictly.

All models forbid unknown fields (fail closed) and are frozen. Times are integer
milliseconds since the Unix epoch (UTC). Binary values are unpadded base64url strings.
``docs/PROTOCOL.md`` is the normative description; these models implement it.
"""

from __future__ import annotations

import re
from datetime import time as dtime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
    model_validator,
)

from keys.encoding import AUTHORITY_ID_PATTERN, MESSAGE_ID_PATTERN, b64d, key_id

TYP_ENVELOPE = "cpar-envelope+jws"
TYP_RECEIPT = "cpar-receipt+jws"
TYP_DIRECTORY = "cpar-directory+jws"
TYP_ROOT_ROTATION = "cpar-root-rotation+jws"
TYP_LOG_HEAD = "cpar-log-head+jws"

AuthorityId = Annotated[str, StringConstraints(pattern=AUTHORITY_ID_PATTERN)]
MessageId = Annotated[str, StringConstraints(pattern=MESSAGE_ID_PATTERN)]
KeyId = Annotated[str, StringConstraints(pattern=r"^[a-z2-7]{16}$")]
Millis = Annotated[int, Field(ge=0, lt=2**53)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]


def _b64_len(n: int) -> Any:
    def check(value: str) -> str:
        if len(b64d(value, what="key")) != n:
            raise ValueError(f"must decode to {n} bytes")
        return value

    return AfterValidator(check)


B64Key32 = Annotated[str, _b64_len(32)]
B64Sig = Annotated[str, _b64_len(64)]
B64Wrapped = Annotated[str, _b64_len(32 + 48)]  # sealed box of a 32-byte content key

Priority = Literal["urgent", "high", "routine"]
Role = Literal["national_body", "central_authority", "supervisory", "duty_desk", "relay"]
ReceiptStatus = Literal["accepted", "delivered", "acknowledged", "rejected", "expired", "escalated"]


class _Model(BaseModel):
    # strict: a JSON integer must be an integer (not "1" or 1.0); unknown fields refused.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- keys -------------------------------------------------------------------------


class _KeyInfo(_Model):
    kid: KeyId
    pk: B64Key32
    nbf: Millis
    exp: Millis
    revoked: Millis | None = None

    @model_validator(mode="after")
    def _kid_matches(self) -> _KeyInfo:
        if key_id(b64d(self.pk)) != self.kid:
            raise ValueError(f"kid {self.kid} is not derived from its public key")
        if self.exp <= self.nbf:
            raise ValueError(f"key {self.kid} expires before it becomes valid")
        return self

    def usable_at(self, t: int) -> bool:
        return self.revoked is None and self.nbf <= t <= self.exp


class SigningKeyInfo(_KeyInfo):
    """An Ed25519 public key of an authority (or of the relay, or the root)."""


class EncryptionKeyInfo(_KeyInfo):
    """An X25519 public key, signed by one of the same authority's signing keys."""

    signer: KeyId
    sig: B64Sig


class PublicKeys(_Model):
    """What an authority exports for the directory keeper (``keys identity export``)."""

    format: Literal["cpar-public-keys"] = "cpar-public-keys"
    v: Literal[1] = 1
    id: AuthorityId
    signing_keys: list[SigningKeyInfo] = Field(min_length=1, max_length=16)
    encryption_keys: list[EncryptionKeyInfo] = Field(default_factory=list, max_length=16)


# --- directory ----------------------------------------------------------------------


class Contact(_Model):
    name: ShortText
    function: ShortText | None = None
    email: ShortText | None = None
    phone: ShortText | None = None


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class WorkingHours(_Model):
    """Office hours in a named IANA timezone; days are ISO weekdays (1 = Monday)."""

    tz: ShortText
    days: list[Annotated[int, Field(ge=1, le=7)]] = Field(min_length=1, max_length=7)
    start: Annotated[str, StringConstraints(pattern=_HHMM.pattern)]
    end: Annotated[str, StringConstraints(pattern=_HHMM.pattern)]

    @field_validator("tz")
    @classmethod
    def _known_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _order(self) -> WorkingHours:
        if self.start >= self.end:
            raise ValueError("working hours must end after they start")
        return self

    def next_open(self, t_ms: int) -> int:
        """``t_ms`` if open then, else the start of the next opening (ms); DST-aware."""
        from datetime import UTC, datetime, timedelta

        if self.is_open(t_ms):
            return t_ms
        zone = ZoneInfo(self.tz)
        local = datetime.fromtimestamp(t_ms / 1000, tz=UTC).astimezone(zone)
        start = dtime.fromisoformat(self.start)
        for days in range(0, 8):
            day = (local + timedelta(days=days)).date()
            if day.isoweekday() not in self.days:
                continue
            opening = datetime.combine(day, start, tzinfo=zone)
            if opening.timestamp() * 1000 > t_ms:
                return int(opening.timestamp() * 1000)
        return t_ms  # unreachable with at least one working day; fail open to "now"

    def is_open(self, t_ms: int) -> bool:
        from datetime import UTC, datetime

        local = datetime.fromtimestamp(t_ms / 1000, tz=UTC).astimezone(ZoneInfo(self.tz))
        if local.isoweekday() not in self.days:
            return False
        now = local.time()
        return dtime.fromisoformat(self.start) <= now < dtime.fromisoformat(self.end)


class EscalationChain(_Model):
    deputies: list[AuthorityId] = Field(default_factory=list, max_length=16)
    duty_desk: AuthorityId | None = None
    supervisor: AuthorityId | None = None


class DirectoryEntry(_Model):
    id: AuthorityId
    name: ShortText
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    role: Role
    signing_keys: list[SigningKeyInfo] = Field(min_length=1, max_length=16)
    encryption_keys: list[EncryptionKeyInfo] = Field(default_factory=list, max_length=16)
    contacts: list[Contact] = Field(default_factory=list, max_length=32)
    hours: WorkingHours | None = None
    escalation: EscalationChain = Field(default_factory=EscalationChain)
    tls_spki_sha256: list[B64Key32] = Field(default_factory=list, max_length=4)
    """A relay's TLS keys: base64url SHA-256 of each certificate's SubjectPublicKeyInfo.
    Clients accept a TLS connection to the relay only with one of these keys (two
    during a rotation)."""

    @model_validator(mode="after")
    def _tls_only_for_relays(self) -> DirectoryEntry:
        if self.tls_spki_sha256 and self.role != "relay":
            raise ValueError("only a relay's entry may list tls_spki_sha256")
        return self

    def signing_key(self, kid: str) -> SigningKeyInfo | None:
        return next((k for k in self.signing_keys if k.kid == kid), None)

    def current_encryption_key(self, t: int) -> EncryptionKeyInfo | None:
        """The newest encryption key valid at ``t``, or None."""
        usable = [k for k in self.encryption_keys if k.usable_at(t)]
        return max(usable, key=lambda k: (k.nbf, k.kid)) if usable else None


class DirectoryDocument(_Model):
    """The payload of a directory JWS, signed by the network root key."""

    format: Literal["cpar-directory"] = "cpar-directory"
    v: Literal[1] = 1
    network: ShortText
    version: Annotated[int, Field(ge=1)]
    prev: Sha256Hex | None
    issued: Millis
    expires: Millis | None = None
    """After this (plus the client's grace), clients refuse the version: the keeper must
    publish a newer one. ``null``: no expiry (older directories)."""
    authorities: list[DirectoryEntry] = Field(max_length=10_000)

    @model_validator(mode="after")
    def _consistent(self) -> DirectoryDocument:
        if (self.version == 1) != (self.prev is None):
            raise ValueError("version 1 has no prev; every later version must have one")
        if self.expires is not None and self.expires <= self.issued:
            raise ValueError("expires must be after issued")
        ids = [a.id for a in self.authorities]
        if len(set(ids)) != len(ids):
            raise ValueError("an authority id appears twice")
        known = set(ids)
        for entry in self.authorities:
            chain = entry.escalation
            refs = [*chain.deputies, chain.duty_desk, chain.supervisor]
            for ref in refs:
                if ref is not None and (ref not in known or ref == entry.id):
                    raise ValueError(f"{entry.id}: escalation names unknown authority {ref}")
        return self


class RootRotation(_Model):
    """The payload of a root-key rotation statement, signed by the outgoing root key.

    From directory version ``from_version`` on, versions are signed by ``new``; ``old``
    may sign no version after ``from_version - 1``."""

    format: Literal["cpar-root-rotation"] = "cpar-root-rotation"
    v: Literal[1] = 1
    network: ShortText
    old: B64Key32
    new: B64Key32
    from_version: Annotated[int, Field(ge=2)]
    issued: Millis

    @model_validator(mode="after")
    def _distinct(self) -> RootRotation:
        if self.old == self.new:
            raise ValueError("a rotation needs a new key")
        return self


class JwsHeader(_Model):
    alg: Literal["Ed25519", "EdDSA"]
    typ: str
    kid: KeyId


# --- envelopes ----------------------------------------------------------------------


class RecipientKey(_Model):
    """One wrapped content key: ``crypto_box_seal(content_key, recipient X25519 key)``."""

    aid: AuthorityId
    kid: KeyId
    role: Literal["to", "fallback"]
    wk: B64Wrapped


class AttachmentRef(_Model):
    """A pointer the relay can see: the SHA-256 and length of an attachment's ciphertext."""

    h: Sha256Hex
    n: Annotated[int, Field(ge=41, le=2**40)]


class EnvelopeHeader(_Model):
    """The protected header: the only part of an envelope the relay reads."""

    alg: Literal["Ed25519", "EdDSA"]
    typ: Literal["cpar-envelope+jws"]
    kid: KeyId
    v: Literal[1]
    id: MessageId
    from_: AuthorityId = Field(alias="from")
    to: list[AuthorityId] = Field(min_length=1, max_length=64)
    created: Millis
    expires: Millis
    prio: Priority
    ack_by: Millis | None = None
    rcpt: list[RecipientKey] = Field(min_length=1, max_length=128)
    att: list[AttachmentRef] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _consistent(self) -> EnvelopeHeader:
        if self.expires <= self.created:
            raise ValueError("expires must be after created")
        if self.ack_by is not None and not self.created < self.ack_by <= self.expires:
            raise ValueError("ack_by must fall between created and expires")
        if len(set(self.to)) != len(self.to):
            raise ValueError("a recipient appears twice in to")
        if self.from_ in self.to:
            raise ValueError("the sender cannot be a recipient")
        if len({r.aid for r in self.rcpt}) != len(self.rcpt):
            raise ValueError("rcpt wraps the content key for one authority more than once")
        wrapped_to = {r.aid for r in self.rcpt if r.role == "to"}
        if wrapped_to != set(self.to):
            raise ValueError("rcpt must wrap the content key for exactly the recipients in to")
        fallbacks = [r.aid for r in self.rcpt if r.role == "fallback"]
        if set(fallbacks) & set(self.to) or self.from_ in fallbacks:
            raise ValueError("fallback recipients must be distinct, not in to, and not the sender")
        if len({a.h for a in self.att}) != len(self.att):
            raise ValueError("an attachment appears twice")
        return self

    @property
    def fallbacks(self) -> list[str]:
        return [r.aid for r in self.rcpt if r.role == "fallback"]


class AttachmentManifestEntry(_Model):
    """Inside the encrypted payload: how to find, check and decrypt one attachment."""

    h: Sha256Hex
    n: Annotated[int, Field(ge=41, le=2**40)]
    key: B64Key32
    name: ShortText
    type: ShortText = "application/octet-stream"
    size: Annotated[int, Field(ge=0, le=2**40)]


class Plaintext(_Model):
    """The decrypted body. ``from``/``to``/``id``/``created`` repeat the header."""

    v: Literal[1]
    id: MessageId
    from_: AuthorityId = Field(alias="from")
    to: list[AuthorityId]
    created: Millis
    handling: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9:_.-]{1,32}$")]] = Field(
        default_factory=list, max_length=16
    )
    attachments: list[AttachmentManifestEntry] = Field(default_factory=list, max_length=32)
    content: dict[str, JsonValue]


# --- receipts -----------------------------------------------------------------------


class ReceiptHeader(_Model):
    """A receipt's protected header: ``cpar-batch-Ed25519`` since protocol version 2
    (``Ed25519`` is read only to refuse version 1 with a clear message)."""

    alg: Literal["cpar-batch-Ed25519", "Ed25519", "EdDSA"]
    typ: str
    kid: KeyId


class ReceiptBody(_Model):
    v: Literal[2]
    msg: MessageId
    env: Sha256Hex
    status: ReceiptStatus
    at: Millis
    by: AuthorityId
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None
    person: ShortText | None = None
    step: Annotated[int, Field(ge=1, le=16)] | None = None


# --- the relay's log ------------------------------------------------------------------


class LogHeadBody(_Model):
    """A signed tree head of the relay's log (RFC 9162 section 4.10's content)."""

    v: Literal[1]
    log: AuthorityId
    """The relay whose log this is (the signer)."""
    size: Annotated[int, Field(ge=0, lt=2**53)]
    root: Sha256Hex
    """The tree hash over the first ``size`` leaves, lowercase hex."""
    at: Millis
