"""The storage contract every backend implements (SQLite now, Redis for scale-out).

The domain core (:mod:`relay.core`) talks only to :class:`Store`. Every method is a
coroutine and never blocks the event loop. "Committed" means durable under the
backend's policy: a write that returned has survived ``kill -9`` of the relay.
One parametrized contract suite (``tests/relay/test_store_contract.py``) runs against every
backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from keys.lifecycle import CLOSED, State, Step
from keys.merkle import leaf_hash

MessageState = State
ItemType = Literal["envelope", "receipt", "escalation"]
TERMINAL_STATES: frozenset[str] = CLOSED
STEP_REMIND, STEP_RELEASE, STEP_NOTIFY, STEP_EXPIRE = (
    int(Step.REMIND),
    int(Step.RELEASE),
    int(Step.NOTIFY),
    int(Step.EXPIRE),
)


class StoreError(Exception):
    """Base class of storage failures."""


class StoreUnavailableError(StoreError):
    """The backend cannot be reached or refused the write; nothing was committed."""


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A verified envelope ready to be committed, with its pre-signed accepted receipt."""

    id: str
    sender: str
    to: tuple[str, ...]
    fallbacks: tuple[str, ...]
    envelope: str
    env_hash: str
    created: int
    expires: int
    priority: str
    ack_by: int | None
    accepted_at: int
    accepted_receipt: str
    attachments: tuple[str, ...] = ()
    policy: str = "{}"
    """The escalation policy snapshot (JSON), fixed at accept time."""
    timers: tuple[tuple[int, int], ...] = ()
    """(step, due) timers to start: the first escalation step and the expiry."""


@dataclass(frozen=True, slots=True)
class AcceptResult:
    id: str
    outcome: Literal["accepted", "duplicate", "conflict"]
    receipt: str | None
    """The accepted receipt: the new one, or the original for a duplicate."""
    queued: tuple[int, ...] = ()
    """For a new message: the queue seq given to each ``to`` recipient, in order."""


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: str
    sender: str
    to: tuple[str, ...]
    fallbacks: tuple[str, ...]
    envelope: str
    env_hash: str
    created: int
    expires: int
    priority: str
    ack_by: int | None
    accepted_at: int
    accepted_receipt: str
    state: MessageState
    attachments: tuple[str, ...] = ()
    policy: str = "{}"
    generation: int = 0
    escalation_step: int = 0
    released: tuple[str, ...] = ()
    log_index: int | None = field(default=None, compare=False)
    """Where the accepted receipt is in the relay's log (None: stored before the log)."""


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    msg_id: str
    status: str
    signer: str
    at: int
    token: str
    received_at: int
    step: int = 0
    """The escalation step, for ``escalated`` receipts (one receipt per step)."""
    log_index: int | None = field(default=None, compare=False)
    """Where the receipt is in the relay's log, once stored (None: before the log)."""


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One thing waiting for an authority: an envelope for it, or a receipt for its message."""

    seq: int
    recipient: str
    type: ItemType
    msg_id: str
    payload: str
    enqueued_at: int
    reminder: bool = False
    note: str | None = None


@dataclass(frozen=True, slots=True)
class NewItem:
    """An item to queue as part of an escalation (payload None: the message's envelope)."""

    recipient: str
    type: ItemType
    payload: str | None = None
    reminder: bool = False
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Timer:
    msg_id: str
    step: int
    due: int
    generation: int


@dataclass(frozen=True, slots=True)
class Escalation:
    """What firing one timer does (:class:`keys.lifecycle.StepEffects`, resolved by the
    core into queue items and a signed receipt); applied atomically by the store.

    The store decides nothing: it applies every field as given, and only if the timer
    still exists with the same due time and generation and the message is not closed (a
    late timer after an acknowledgement, or a stale plan for a timer that has moved, does
    nothing).
    """

    timer: Timer
    items: tuple[NewItem, ...] = ()
    receipt: ReceiptRecord | None = None
    """The relay-signed escalated/expired receipt, queued for ``sender`` (it moves no
    state by itself: ``new_state`` and ``close`` do)."""
    sender: str = ""
    next_timer: tuple[int, int] | None = None
    """Start this (step, due) timer, with the same generation (not when closing)."""
    new_state: MessageState | None = None
    close: bool = False
    """Bump the fencing generation and drop every timer of the message."""
    record_step: bool = False
    """Record the timer's step as the message's escalation step."""
    released: tuple[str, ...] = ()
    drop_queued: bool = False
    """Remove the message's envelopes still queued (on expiry)."""
    deferred: bool = False
    """Not a step: the timer moves to ``next_timer`` (outside working hours)."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    recipient: str
    depth: int
    oldest_enqueued_at: int | None


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one :meth:`Store.prune` call removed."""

    messages: int = 0
    receipts: int = 0
    queued: int = 0
    """Queued copies of the pruned messages' envelopes (never read by a recipient).
    Queued receipts and notes carry their own payload: they stay until read."""
    attachments: tuple[str, ...] = ()
    """Digests of attachments forgotten: the caller deletes their files."""


@dataclass(frozen=True, slots=True)
class LogHead:
    """The relay's log: how many leaves, and the RFC 9162 root over them."""

    size: int
    root: bytes


def log_leaf(token: str) -> bytes:
    """The leaf hash of a receipt in the relay's log: its compact token is the leaf."""
    return leaf_hash(token.encode("utf-8"))


@runtime_checkable
class Store(Protocol):
    """Durable state of one relay network."""

    shared: bool
    """True when several relay instances share this store (Redis): then pushes and
    request nonces must be coordinated through it."""

    async def start(self) -> None:
        """Open connections and apply schema migrations."""

    async def close(self) -> None:
        """Finish in-flight writes and release resources."""

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the backend answers."""

    async def accept(self, messages: Sequence[NewMessage]) -> list[AcceptResult]:
        """Commit new messages and queue them for their ``to`` recipients, atomically.

        Returns one result per message, in order. An id already stored (also earlier in
        the same call) with the same envelope hash is a ``duplicate`` (nothing is written;
        the original receipt is returned); with another hash, a ``conflict``.
        """
        ...

    async def get_message(self, msg_id: str) -> MessageRecord | None: ...

    async def add_receipts(self, receipts: Sequence[tuple[ReceiptRecord, str]]) -> list[int | None]:
        """Store ``(receipt, notify)`` pairs in one commit, like :meth:`add_receipt`.

        One result each, in order: the queue seq given to the new receipt, or None
        when that (msg_id, signer, status) was already stored.
        """
        ...

    async def add_receipt(self, receipt: ReceiptRecord, *, notify: str) -> bool:
        """Store a receipt (idempotent on msg_id, signer, status), queue it for ``notify``,
        and advance the message state. Returns False if it was already stored."""
        ...

    async def receipts(self, msg_id: str) -> list[ReceiptRecord]:
        """Every receipt added with :meth:`add_receipt`, in the order received.

        The relay's own accepted receipt is not among them: it is
        :attr:`MessageRecord.accepted_receipt`.
        """
        ...

    async def pending(self, recipient: str, *, after: int, limit: int) -> list[QueueItem]:
        """Unacknowledged items for ``recipient`` with ``seq > after``, oldest first."""
        ...

    async def ack(self, recipient: str, seqs: Sequence[int]) -> int:
        """Remove acknowledged items; returns how many were removed."""
        ...

    async def depth(self, recipient: str) -> int:
        """How many unacknowledged items ``recipient`` has."""
        ...

    async def queue_stats(self) -> list[QueueStats]:
        """Depth and age of the oldest item, per authority with anything queued."""
        ...

    async def due_timers(self, now: int, *, limit: int) -> list[tuple[Timer, MessageRecord]]:
        """Timers due at ``now`` (oldest first), each with its message."""
        ...

    async def fire(self, escalations: Sequence[Escalation]) -> list[tuple[int, ...] | None]:
        """Apply each escalation atomically (one commit for all). One result each: the
        seqs given to its items (and then its receipt), or None when the timer had
        already fired, was fenced off by an acknowledgement, or its message is closed."""
        ...

    async def timer_stats(self, now: int, *, overdue_after_ms: int) -> tuple[int, int, int | None]:
        """(pending timers, timers overdue by more than ``overdue_after_ms``, next due)."""
        ...

    async def open_escalations(self, *, limit: int) -> list[MessageRecord]:
        """Messages past step 1 of their escalation and not yet closed, newest first."""
        ...

    async def listen(self, deliver: Callable[[list[QueueItem]], None]) -> None:
        """Until cancelled, hand ``deliver`` the items committed by *other* relay
        instances, so a daemon connected here gets a message submitted there. A store
        used by one instance only returns at once.

        ``deliver([])`` (no items) means pushes may have been missed (the listener
        reconnected, or a write's outcome is unknown): every local session must re-read
        its queue from the store."""
        ...

    async def claim_nonce(self, nonce: str, expires_at: int) -> bool:
        """Remember a request nonce until ``expires_at`` (Unix seconds); False if it was
        already seen. A durable store remembers it across a restart of the relay (and,
        when shared, across instances), so a captured request cannot be replayed to a
        restarted relay."""
        ...

    async def put_attachment(self, digest: str, *, uploader: str, size: int, at: int) -> bool:
        """Record an uploaded attachment's metadata; False if it was already known."""
        ...

    async def attachment_uploader(self, digest: str) -> str | None:
        """Who uploaded the attachment ``digest`` (None: nobody). An envelope may only
        reference attachments its sender uploaded."""
        ...

    async def may_read_attachment(self, digest: str, authority: str) -> bool:
        """The uploader, or a recipient of a message that references it."""
        ...

    async def prune(self, before: int, *, limit: int) -> Pruned:
        """Forget up to ``limit`` closed messages accepted before ``before`` (Unix ms),
        oldest first, with their receipts, timers and the queued copies of their envelope
        (queued receipts and notes stay until read), in one commit; and
        the attachments uploaded before ``before`` that no message still stored
        references. A message not yet closed is kept (its expiry closes it)."""
        ...

    async def log_head(self) -> LogHead:
        """The append-only log of every receipt stored (the accepted receipts included),
        in commit order: each write that stores a receipt appends its leaf
        (:func:`log_leaf`) in the same commit, so the log survives what the receipts
        survive. Covers every write that has returned."""
        ...

    async def log_nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Perfect subtrees of the log, by ``(level, index)`` (level 0: leaf hashes); the
        ones not stored (beyond the log's size) are left out."""
        ...
