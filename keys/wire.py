"""The relay's wire protocol as types: every HTTP body, WebSocket frame and queue item.

Sans-I/O: these models only describe, parse and serialise; the relay's handlers and
the client library both use them, and ``/openapi.json`` is generated from them. What
the relay *parses* (requests, client frames, query parameters) is strict and refuses
unknown members; what it *sends* tolerates members added later, so an older client
keeps working against a newer relay. Signed objects (envelopes, receipts, the
directory) travel as compact JWS strings and are described by :mod:`keys.models`.

Parse each body or frame once (``TypeAdapter.validate_json`` / ``model_validate_json``)
and serialise with :func:`encode`; never through an intermediate ``dict``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationError,
)

from keys.encoding import AUTHORITY_ID_PATTERN, MESSAGE_ID_PATTERN
from keys.models import Priority

MAX_SEQ = 2**63 - 1
"""Largest sequence number (a signed 64-bit integer, as SQLite and Redis store it)."""
MAX_ACK_SEQS = 10_000
MAX_RECEIPTS_PER_FRAME = 1000
POLL_DEFAULT_LIMIT = 100
POLL_MAX_LIMIT = 500
POLL_MAX_WAIT_S = 120
"""The highest ``wait`` a request may name; a relay waits at most its own
``longpoll_max_wait_s`` (default 30), so a larger ``wait`` is clamped to it."""

JWS_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+$"
DIGEST_PATTERN = r"^[0-9a-f]{64}$"

Jws = Annotated[str, Field(json_schema_extra={"pattern": JWS_PATTERN})]
"""A compact JWS the relay sends (an envelope, a receipt, a directory). The pattern is
documented (and the schema tests hold the relay to it) but not checked when a client
parses: scanning every envelope's characters would cost more than the JSON parse, and
the client verifies each token's signature anyway."""
Token = Annotated[str, Field(description="a compact JWS: header.payload.signature")]
"""A compact JWS the relay receives: any string here, so that each bad token gets its
own precise refusal from the trust layer (and a bad one in a batch spoils only itself)."""
MessageId = Annotated[str, StringConstraints(pattern=MESSAGE_ID_PATTERN)]
AuthorityId = Annotated[str, StringConstraints(pattern=AUTHORITY_ID_PATTERN)]
Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]
Ref = Annotated[JsonValue, Field(description="any JSON value the client chose, echoed back")]
MessageState = Literal["accepted", "delivered", "acknowledged", "rejected", "expired"]


class Inbound(BaseModel):
    """Something the relay parses: strict types, unknown members refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _always_sent(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    # Serialised without None members: a member is always present unless it defaults to None.
    required = schema.setdefault("required", [])
    for name, info in cls.model_fields.items():
        if info.default is not None and name not in required:
            required.append(name)


class Outbound(BaseModel):
    """Something the relay sends: members added later are ignored by older clients."""

    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_extra=_always_sent)


# --- problems (RFC 9457) ----------------------------------------------------------------


class Problem(Outbound):
    """An error: ``application/problem+json``, or inside a batch result or error frame."""

    type: str = Field(description="urn:cpar:problem:<code>")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    code: str = Field(description="stable machine-readable reason")


class ProblemResult(Outbound):
    """One refused item of a batch."""

    problem: Problem


# --- messages -----------------------------------------------------------------------------


class SubmitOne(Inbound):
    envelope: Token


class SubmitBatch(Inbound):
    envelopes: list[Token] = Field(
        min_length=1, description="at most the relay's max_batch (default 100)"
    )


def _submit_tag(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "envelopes" in value else "one"


SubmitRequest = Annotated[
    Annotated[SubmitOne, Tag("one")] | Annotated[SubmitBatch, Tag("batch")],
    Discriminator(_submit_tag),
]
SUBMIT_REQUEST: TypeAdapter[SubmitRequest] = TypeAdapter(SubmitRequest)


class Presence(Outbound):
    """Whether an authority's daemon can be reached now, as this relay sees it: it
    answered a probe, connected or polled lately. Nothing else about it (no queue)."""

    id: AuthorityId
    reachable: bool
    unreachable_since: int | None = Field(
        None, description="ms since the epoch: the last sign of life (absent when reachable)"
    )


class PlannedStep(Outbound):
    """One escalation step of a message, due at a fixed time unless acknowledged before."""

    step: int = Field(ge=1, description="1 remind, 2 release, 3 notify")
    name: str = Field(description="remind, release or notify")
    due: int = Field(description="ms since the epoch (a step outside working hours may wait)")


class Submitted(Outbound):
    """An envelope the relay made durable; ``receipt`` is its relay-signed ``accepted``.

    The answer to a single new envelope also tells the sender whether each recipient's
    daemon is reachable now and when the escalation steps will happen.
    """

    id: MessageId
    receipt: Jws
    duplicate: bool
    recipients: list[Presence] | None = Field(
        None, description="each recipient (to) and whether its daemon is reachable now"
    )
    schedule: list[PlannedStep] | None = Field(
        None, description="the message's escalation plan (single new envelope only)"
    )


class PresenceList(Outbound):
    """``GET /v1/presence``: every authority of the directory, reachable or since when not."""

    at: int = Field(description="the relay's time (ms since the epoch)")
    authorities: list[Presence]


class EscalationPolicy(Outbound):
    """One priority's escalation policy: each step's delay after acceptance."""

    priority: Priority
    remind_after_ms: int = Field(gt=0, description="step 1: remind the recipients")
    release_after_ms: int = Field(gt=0, description="step 2: release to the fallbacks")
    notify_after_ms: int = Field(gt=0, description="step 3: notify the supervisor")
    working_hours: bool = Field(
        description="reminders and notifications wait for the recipient's working hours"
    )


class PolicyList(Outbound):
    """``GET /v1/policy``: the escalation policy a message accepted now would get."""

    policies: list[EscalationPolicy]


class BatchResults(Outbound):
    """The answer to a batch, one result per envelope in request order."""

    results: list[Submitted | ProblemResult]


class Timeline(Outbound):
    """A message as its sender sees it: the protected header and every receipt."""

    id: MessageId
    header: dict[str, Any]
    envelope_hash: Digest
    state: MessageState
    receipts: list[Jws] = Field(description="in the order the relay received them")
    envelope: Jws | None = Field(None, description="the envelope as the relay accepted it")


# --- receipts -----------------------------------------------------------------------------


class ReceiptRequest(Inbound):
    receipt: Token


class ReceiptStored(Outbound):
    duplicate: bool


# --- inbox ---------------------------------------------------------------------------------


_QUERY_INT = re.compile(r"-?[0-9]{1,20}")


def _query_int(value: Any) -> Any:
    """A query parameter is an optionally signed run of decimal digits, nothing else."""
    if isinstance(value, str):
        if not _QUERY_INT.fullmatch(value):
            raise ValueError("must be a decimal integer")
        return int(value)
    return value


QueryInt = Annotated[int, BeforeValidator(_query_int)]


class InboxQuery(BaseModel):
    """``GET /v1/inbox`` query parameters. Out of bounds is refused (400), except that
    ``wait`` above the relay's own long-poll maximum is clamped to it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    after: QueryInt = Field(0, ge=0, le=MAX_SEQ, description="return items with a larger seq")
    wait: QueryInt = Field(0, ge=0, le=POLL_MAX_WAIT_S, description="seconds to wait for one item")
    limit: QueryInt = Field(POLL_DEFAULT_LIMIT, ge=1, le=POLL_MAX_LIMIT, description="most items")


class EnvelopeItem(Outbound):
    seq: Seq
    type: Literal["envelope"] = "envelope"
    id: MessageId
    envelope: Jws
    reminder: bool = Field(False, description="pushed again by escalation step 1")
    note: str | None = Field(None, description="plain text for people (e.g. a fallback)")


class ReceiptItem(Outbound):
    seq: Seq
    type: Literal["receipt"] = "receipt"
    id: MessageId
    receipt: Jws
    note: str | None = None


class EscalationItem(Outbound):
    seq: Seq
    type: Literal["escalation"] = "escalation"
    id: MessageId
    notice: Jws = Field(description="a relay-signed escalated receipt")
    note: str | None = None


Item = Annotated[EnvelopeItem | ReceiptItem | EscalationItem, Field(discriminator="type")]
"""A queued item: an envelope for its recipient, a receipt or an escalation notice."""


class UnknownItem(Outbound):
    """An item this client cannot read: a type it does not know (from a newer relay), or
    a malformed one. The client acknowledges and drops it, so it is not pushed forever."""

    seq: Seq
    type: str


ReceivedItem = Annotated[Item | UnknownItem, Field(union_mode="left_to_right")]
"""What a client accepts as an item: a documented one, else anything with a seq."""


class InboxPage(Outbound):
    items: list[Item]


class ReceivedInboxPage(Outbound):
    items: list[ReceivedItem]


class AckRequest(Inbound):
    seqs: list[Seq] = Field(max_length=MAX_ACK_SEQS)


class Acked(Outbound):
    acked: int = Field(ge=0, description="how many items were removed")


# --- WebSocket frames: relay -> client --------------------------------------------------------


class Hello(Outbound):
    type: Literal["hello"] = "hello"
    authority: AuthorityId
    pending: int = Field(ge=0)


class ItemsFrame(Outbound):
    type: Literal["items"] = "items"
    items: list[Item]


class Probe(Outbound):
    type: Literal["probe"] = "probe"
    nonce: str


class ReceiptOk(Outbound):
    type: Literal["receipt_ok"] = "receipt_ok"
    id: MessageId
    duplicate: bool
    ref: Ref = None


class ReceiptResult(Outbound):
    id: MessageId
    duplicate: bool


class ReceiptsOk(Outbound):
    type: Literal["receipts_ok"] = "receipts_ok"
    results: list[ReceiptResult | ProblemResult]
    ref: Ref = None


class SubmittedFrame(Outbound):
    """The answer to a ``submit`` frame: one result per envelope, in frame order."""

    type: Literal["submitted"] = "submitted"
    results: list[Submitted | ProblemResult]
    ref: Ref = None


class ErrorFrame(Outbound):
    type: Literal["error"] = "error"
    problem: Problem
    ref: Ref = None


class Pong(Outbound):
    type: Literal["pong"] = "pong"


ServerFrame = Annotated[
    EnvelopeItem
    | ReceiptItem
    | EscalationItem
    | Hello
    | ItemsFrame
    | Probe
    | ReceiptOk
    | ReceiptsOk
    | SubmittedFrame
    | ErrorFrame
    | Pong,
    Field(discriminator="type"),
]


class UnknownFrame(Outbound):
    """A frame this client cannot read (a type from a newer relay, or malformed): ignored."""

    type: str


class ReceivedItems(Outbound):
    type: Literal["items"] = "items"
    items: list[ReceivedItem]


_KnownFrame = Annotated[
    EnvelopeItem
    | ReceiptItem
    | EscalationItem
    | Hello
    | ReceivedItems
    | Probe
    | ReceiptOk
    | ReceiptsOk
    | SubmittedFrame
    | ErrorFrame
    | Pong,
    Field(discriminator="type"),
]
ReceivedFrame = Annotated[_KnownFrame | UnknownFrame, Field(union_mode="left_to_right")]
"""What a client accepts from the stream: a documented frame, else any object with a type."""
RECEIVED_FRAME: TypeAdapter[ReceivedFrame] = TypeAdapter(ReceivedFrame)


# --- WebSocket frames: client -> relay ---------------------------------------------------------


class AckFrame(Inbound):
    type: Literal["ack"] = "ack"
    seqs: list[Seq] = Field(max_length=MAX_ACK_SEQS)


class ReceiptFrame(Inbound):
    type: Literal["receipt"] = "receipt"
    receipt: Token
    ref: Ref = None


class ReceiptsFrame(Inbound):
    type: Literal["receipts"] = "receipts"
    receipts: list[Token] = Field(min_length=1, max_length=MAX_RECEIPTS_PER_FRAME)
    ref: Ref = None


class SubmitFrame(Inbound):
    """Envelopes submitted over the authenticated session (one request signature for
    the whole connection, as Signal does): answered by ``submitted`` with the same ref."""

    type: Literal["submit"] = "submit"
    envelopes: list[Token] = Field(
        min_length=1, description="at most the relay's max_batch (default 100)"
    )
    ref: Ref = None


class ProbeAnswer(Inbound):
    type: Literal["probe_ok"] = "probe_ok"
    nonce: str
    answer: Token = Field(description="the probe nonce signed by the authority (a JWS)")


class Ping(Inbound):
    type: Literal["ping"] = "ping"


ClientFrame = Annotated[
    AckFrame | ReceiptFrame | ReceiptsFrame | SubmitFrame | ProbeAnswer | Ping,
    Field(discriminator="type"),
]
CLIENT_FRAME: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


# --- attachments, directory, health --------------------------------------------------------------


class AttachmentStored(Outbound):
    digest: Digest = Field(description="the lowercase hex SHA-256 of the ciphertext")
    size: int = Field(ge=0, description="bytes stored")


class DirectoryCurrent(Outbound):
    version: int = Field(ge=1)
    jws: Jws


class DirectoryHistory(Outbound):
    versions: list[Jws] = Field(description="every signed version, oldest first")
    rotations: list[Jws] = Field(
        default_factory=list,
        description="root-key rotation statements (cpar-root-rotation+jws), oldest first",
    )


# --- the relay's log ------------------------------------------------------------------------

MAX_LOG_SIZE = 2**53 - 1
HexHash = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]


class LogHead(Outbound):
    head: Jws = Field(description="the newest signed tree head (cpar-log-head+jws)")


class ConsistencyQuery(BaseModel):
    """``GET /v1/log/consistency`` query parameters."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    first: QueryInt = Field(ge=0, le=MAX_LOG_SIZE, description="the older tree size")
    second: QueryInt = Field(ge=0, le=MAX_LOG_SIZE, description="the newer tree size")


class ConsistencyProof(Outbound):
    first: int
    second: int
    proof: list[HexHash] = Field(description="RFC 9162 consistency proof, hex hashes")


class ProofsQuery(BaseModel):
    """``GET /v1/messages/{id}/proofs`` query parameters."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    size: QueryInt | None = Field(
        None, ge=1, le=MAX_LOG_SIZE, description="prove against this tree size (default: newest)"
    )


class LogEntryProof(Outbound):
    index: int = Field(description="the leaf's index in the log")
    receipt: Jws = Field(description="the receipt; its UTF-8 bytes are the leaf")
    path: list[HexHash] = Field(description="RFC 9162 inclusion path, leaf to root, hex")


class MessageProofs(Outbound):
    """Where every receipt of a message is in the relay's log, proven against one head."""

    id: MessageId
    head: Jws = Field(description="the signed tree head the paths lead to")
    entries: list[LogEntryProof] = Field(
        description="the accepted receipt first, then the others in the order received"
    )


class Health(Outbound):
    status: Literal["ok"] = "ok"


class Ready(Outbound):
    status: Literal["ready"] = "ready"


class NotReady(Outbound):
    status: Literal["unavailable"] = "unavailable"
    problems: list[str]


# --- helpers ----------------------------------------------------------------------------------


def encode(value: BaseModel | list[Any]) -> bytes:
    """Serialise a model to compact JSON bytes (``None`` members left out)."""
    return pydantic_core.to_json(value, exclude_none=True)


def encode_text(value: BaseModel) -> str:
    """:func:`encode` as text, for a WebSocket text frame."""
    return value.model_dump_json(exclude_none=True)


def describe(exc: ValidationError, what: str, *, union: bool = False, limit: int = 3) -> str:
    """One line naming where ``what`` is wrong, without echoing the (possibly huge) input.

    ``union``: the value was parsed as a tagged union, whose tag leads each location.
    """
    parts: list[str] = []
    for err in exc.errors(include_url=False, include_input=False)[:limit]:
        if err["type"] == "json_invalid":
            return f"{what} is not valid JSON"
        loc = err["loc"][1:] if union else err["loc"]
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{'.'.join(map(str, loc))}: {msg}" if loc else msg)
    more = exc.error_count() - len(parts)
    return f"{what} is invalid: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
