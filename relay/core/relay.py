"""The relay's domain logic: accept, route, receipt, deliver. No aiohttp here.

Transports (HTTP handlers, the WebSocket handler, long-poll) call :class:`RelayCore`
with an already-authenticated authority id and translate :class:`RelayError` into
problem+json. Time comes from the injected clock (integer milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from keys.directory import Directory
from keys.envelope import VerifiedEnvelope, verify_envelope
from keys.errors import KeysError
from keys.identity import Identity
from keys.jws import unverified_header
from keys.models import ReceiptBody
from keys.receipts import sign_receipt, verify_receipt
from keys.wire import Probe
from relay.core.errors import (
    ConflictError,
    ForbiddenError,
    MalformedError,
    NotFoundError,
    RejectedError,
    RelayError,
    UnavailableError,
    from_keys_error,
)
from relay.core.escalation import EscalationEngine
from relay.core.metrics import Metrics
from relay.core.policy import DEFAULT_POLICIES, PolicyConfig, snapshot
from relay.core.probes import Prober
from relay.store.base import (
    STEP_EXPIRE,
    STEP_REMIND,
    AcceptResult,
    MessageRecord,
    NewMessage,
    QueueItem,
    ReceiptRecord,
    Store,
    StoreError,
)

log = logging.getLogger(__name__)

Clock = Callable[[], int]
T = TypeVar("T")
RECIPIENT_RECEIPTS = frozenset({"delivered", "acknowledged", "rejected"})
BUFFER_LIMIT = 10_000
META_CACHE = 100_000
THREAD_VERIFY_MIN = 8
"""Batches at least this large are verified in a worker thread (libsodium drops the GIL)."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_envelope_bytes: int = 4 * 1024 * 1024
    max_batch: int = 100
    max_message_lifetime_ms: int = 90 * 86_400_000
    clock_skew_ms: int = 5 * 60_000
    delivery_window: int = 1000


@dataclass(frozen=True, slots=True)
class Submitted:
    id: str
    receipt: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    msg_id: str
    new: bool
    """False when the same signer had already sent this status for this message."""


@dataclass(frozen=True, slots=True)
class Timeline:
    record: MessageRecord
    header: dict[str, Any]
    receipts: list[str]


@dataclass(eq=False)
class Session:
    """One connected daemon (a WebSocket, or a long-poll waiter)."""

    authority: str
    send: Callable[[list[QueueItem]], Awaitable[None]] | None = None
    control: Callable[[Probe], Awaitable[None]] | None = None
    """Sends a control frame (a probe) on a live connection."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: set[int] = field(default_factory=set)
    connected_at: int = 0
    buffer: deque[QueueItem] = field(default_factory=deque)
    """Items committed since the session caught up, handed over without a store read."""
    covered: int = 0
    """Every pending item with seq <= covered was returned by a store read."""
    caught_up: bool = False
    """False until a store read returned less than a full page (then the buffer is complete)."""
    resyncs: int = 0
    """Bumped whenever the buffer may have missed items; a store read in flight then
    does not count as catching up."""

    def resync(self) -> None:
        self.buffer.clear()
        self.caught_up = False
        self.resyncs += 1
        self.wake.set()

    def offer(self, item: QueueItem) -> None:
        if len(self.buffer) >= BUFFER_LIMIT:
            # A slow consumer: drop the copy in memory and read from the store again.
            self.resync()
        else:
            self.buffer.append(item)
        self.wake.set()


class Hub:
    """Who is connected, and waking their delivery loops when something is queued."""

    def __init__(self) -> None:
        self.sessions: dict[str, set[Session]] = {}
        self.last_seen: dict[str, int] = {}

    def attach(self, session: Session) -> None:
        self.sessions.setdefault(session.authority, set()).add(session)

    def detach(self, session: Session, now: int) -> None:
        group = self.sessions.get(session.authority)
        if group is not None:
            group.discard(session)
            if not group:
                del self.sessions[session.authority]
        self.last_seen[session.authority] = now

    def notify(self, authorities: Sequence[str]) -> None:
        for aid in authorities:
            for session in self.sessions.get(aid, ()):
                session.wake.set()

    def publish(self, items: Sequence[QueueItem]) -> None:
        """Hand committed items to the connected sessions of their recipients."""
        for item in items:
            for session in self.sessions.get(item.recipient, ()):
                session.offer(item)

    def connected(self, authority: str) -> bool:
        return bool(self.sessions.get(authority))

    def count(self) -> int:
        return sum(len(s) for s in self.sessions.values())


class RelayCore:
    def __init__(
        self,
        *,
        store: Store,
        identity: Identity,
        directory: Callable[[], Directory],
        clock: Clock,
        limits: Limits | None = None,
        policies: Mapping[str, PolicyConfig] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.identity = identity
        self._directory = directory
        self.clock = clock
        self.limits = limits or Limits()
        self.policies = dict(policies or DEFAULT_POLICIES)
        self.metrics = metrics
        self.hub = Hub()
        self.escalation = EscalationEngine(self)
        self._background: set[asyncio.Future[Any]] = set()
        self.prober = Prober(self)
        # msg id -> (sender, recipients incl. fallbacks, envelope hash, accepted at).
        self._meta: OrderedDict[str, tuple[str, frozenset[str], str, int]] = OrderedDict()

    def _remember(
        self, msg_id: str, sender: str, recipients: frozenset[str], env_hash: str, accepted_at: int
    ) -> None:
        self._meta[msg_id] = (sender, recipients, env_hash, accepted_at)
        if len(self._meta) > META_CACHE:
            self._meta.popitem(last=False)

    async def _message_meta(self, msg_id: str) -> tuple[str, frozenset[str], str, int] | None:
        meta = self._meta.get(msg_id)
        if meta is None:
            record = await self._store(self.store.get_message(msg_id))
            if record is None:
                return None
            meta = (
                record.sender,
                frozenset((*record.to, *record.fallbacks)),
                record.env_hash,
                record.accepted_at,
            )
            self._remember(msg_id, *meta)
        return meta

    @property
    def probes(self) -> dict[str, int]:
        """authority -> when its daemon last answered a probe (ms)."""
        return self.prober.answers

    @property
    def directory(self) -> Directory:
        return self._directory()

    # -- submit ---------------------------------------------------------------------

    async def submit(self, authority: str, tokens: Sequence[str]) -> list[Submitted | RelayError]:
        """Verify, commit and queue envelopes from ``authority``; one outcome per token.

        Returns only after the accepted ones are committed: the receipts in the result
        are the durable promise.
        """
        if len(tokens) > self.limits.max_batch:
            raise MalformedError(f"a batch holds at most {self.limits.max_batch} envelopes")
        now = self.clock()
        directory = self.directory
        if len(tokens) >= THREAD_VERIFY_MIN:
            checked = await asyncio.to_thread(self._check_all, authority, tokens, directory, now)
        else:
            checked = self._check_all(authority, tokens, directory, now)
        fresh = [c for c in checked if isinstance(c, NewMessage)]
        for msg in fresh:
            if msg.attachments:
                for digest in msg.attachments:
                    if not await self._store(self.store.attachment_known(digest)):
                        idx = checked.index(msg)
                        checked[idx] = RejectedError(
                            f"attachment {digest} has not been uploaded",
                            code="attachment_missing",
                        )
                        break
        fresh = [c for c in checked if isinstance(c, NewMessage)]
        # One result per fresh message, in order: the store sees a repeated id within the
        # batch as a duplicate (same envelope) or a conflict (another envelope).
        results: list[AcceptResult] = []
        if fresh:
            results = await self._shielded(self._accept_and_publish(fresh))
        pending = iter(results)
        out: list[Submitted | RelayError] = []
        for item in checked:
            if isinstance(item, RelayError):
                out.append(item)
                continue
            res = next(pending)
            if res.outcome == "conflict":
                out.append(
                    ConflictError(f"message id {item.id} was accepted with another envelope")
                )
            else:
                assert res.receipt is not None
                out.append(Submitted(item.id, res.receipt, res.outcome == "duplicate"))
        return out

    async def _shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a commit-then-publish step to its end even if the caller is cancelled (a
        client went away): a committed item must reach the connected sessions."""
        task = asyncio.ensure_future(self._store(coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return await asyncio.shield(task)

    async def _accept_and_publish(self, fresh: list[NewMessage]) -> list[AcceptResult]:
        results = await self.store.accept(fresh)
        queued: list[QueueItem] = []
        for msg, res in zip(fresh, results, strict=True):
            if res.outcome != "accepted":
                continue
            self._remember(
                msg.id,
                msg.sender,
                frozenset((*msg.to, *msg.fallbacks)),
                msg.env_hash,
                msg.accepted_at,
            )
            queued.extend(
                QueueItem(seq, rcpt, "envelope", msg.id, msg.envelope, msg.accepted_at)
                for rcpt, seq in zip(msg.to, res.queued, strict=True)
            )
        self.hub.publish(queued)
        if self.metrics is not None:
            self.metrics.accepted.inc(sum(1 for r in results if r.outcome == "accepted"))
        return results

    def _check_all(
        self, authority: str, tokens: Sequence[str], directory: Directory, now: int
    ) -> list[NewMessage | RelayError]:
        out: list[NewMessage | RelayError] = []
        for token in tokens:
            try:
                out.append(self._check(authority, token, directory, now))
            except RelayError as exc:
                out.append(exc)
        return out

    def _check(self, authority: str, token: str, directory: Directory, now: int) -> NewMessage:
        if not isinstance(token, str):
            raise MalformedError("an envelope must be a string (compact JWS)")
        try:
            env: VerifiedEnvelope = verify_envelope(
                token,
                directory,
                now=now,
                max_skew_ms=self.limits.clock_skew_ms,
                max_bytes=self.limits.max_envelope_bytes,
            )
        except KeysError as exc:
            raise from_keys_error(exc) from exc
        h = env.header
        if h.from_ != authority:
            raise ForbiddenError(
                f"envelope is from {h.from_} but the request is signed by {authority}",
                code="sender_mismatch",
            )
        if h.expires - h.created > self.limits.max_message_lifetime_ms:
            raise RejectedError(
                f"message lifetime exceeds {self.limits.max_message_lifetime_ms // 86_400_000} days",
                code="lifetime_too_long",
            )
        for r in h.rcpt:
            entry = directory.get(r.aid)
            if entry is None or entry.role == "relay":
                raise RejectedError(
                    f"recipient {r.aid} is not in the directory", code="unknown_recipient"
                )
            if not any(k.kid == r.kid and k.revoked is None for k in entry.encryption_keys):
                raise RejectedError(
                    f"message is sealed to key {r.kid}, which {r.aid} does not hold",
                    code="unknown_recipient_key",
                )
        receipt = sign_receipt(
            self.identity, msg_id=h.id, envelope_hash=env.hash, status="accepted", now=now
        )
        policy = self.policies.get(h.prio) or DEFAULT_POLICIES[h.prio]
        snap = snapshot(policy, priority=h.prio, accepted_at=now, ack_by=h.ack_by)
        return NewMessage(
            id=h.id,
            sender=h.from_,
            to=tuple(h.to),
            fallbacks=tuple(h.fallbacks),
            envelope=token,
            env_hash=env.hash,
            created=h.created,
            expires=h.expires,
            priority=h.prio,
            ack_by=h.ack_by,
            accepted_at=now,
            accepted_receipt=receipt,
            attachments=tuple(a.h for a in h.att),
            policy=snap.dumps(),
            timers=((STEP_REMIND, snap.steps[0][1]), (STEP_EXPIRE, h.expires)),
        )

    async def _store(self, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except StoreError as exc:
            raise UnavailableError(f"the message store is unavailable: {exc}") from exc

    # -- receipts -------------------------------------------------------------------

    async def submit_receipt(self, authority: str, token: str) -> StoredReceipt:
        """Verify and store a recipient's receipt, and queue it for the sender.

        The result names the message and says whether the receipt was new.
        """
        (result,) = await self.submit_receipts(authority, [token])
        if isinstance(result, RelayError):
            raise result
        return result

    async def submit_receipts(
        self, authority: str, tokens: Sequence[str]
    ) -> list[StoredReceipt | RelayError]:
        """:meth:`submit_receipt` for many receipts, verified together and committed once."""
        now = self.clock()
        directory = self.directory
        if len(tokens) >= THREAD_VERIFY_MIN:
            checked = await asyncio.to_thread(
                self._verify_receipts, authority, tokens, directory, now
            )
        else:
            checked = self._verify_receipts(authority, tokens, directory, now)
        out: list[StoredReceipt | RelayError] = []
        batch: list[tuple[ReceiptRecord, str]] = []
        slots: list[int] = []
        for token, item in zip(tokens, checked, strict=True):
            if isinstance(item, RelayError):
                out.append(item)
                continue
            meta = await self._message_meta(item.msg)
            if meta is None or authority not in meta[1]:
                out.append(
                    NotFoundError(
                        f"no message {item.msg} addressed to {authority}", code="unknown_message"
                    )
                )
                continue
            if item.env != meta[2]:
                out.append(
                    RejectedError("receipt is about another envelope", code="receipt_mismatch")
                )
                continue
            record = ReceiptRecord(
                msg_id=item.msg,
                status=item.status,
                signer=authority,
                at=item.at,
                token=token,
                received_at=now,
            )
            batch.append((record, meta[0]))
            slots.append(len(out))
            out.append(StoredReceipt(item.msg, True))
        if batch:
            seqs = await self._shielded(self._add_and_publish(batch, now))
            for (record, _), seq, slot in zip(batch, seqs, slots, strict=True):
                if seq is None:
                    out[slot] = StoredReceipt(record.msg_id, False)
        return out

    async def _add_and_publish(
        self, batch: list[tuple[ReceiptRecord, str]], now: int
    ) -> list[int | None]:
        seqs = await self.store.add_receipts(batch)
        items: list[QueueItem] = []
        for (record, sender), seq in zip(batch, seqs, strict=True):
            if seq is not None:
                items.append(QueueItem(seq, sender, "receipt", record.msg_id, record.token, now))
                self._observe(record, now)
        self.hub.publish(items)
        return seqs

    def _observe(self, record: ReceiptRecord, now: int) -> None:
        if self.metrics is None:
            return
        self.metrics.receipts.labels(status=record.status).inc()
        meta = self._meta.get(record.msg_id)
        if meta is None:
            return
        age = max(0.0, (now - meta[3]) / 1000)
        if record.status == "delivered":
            self.metrics.delivery_latency.observe(age)
        elif record.status == "acknowledged":
            self.metrics.ack_latency.observe(age)

    def _verify_receipts(
        self, authority: str, tokens: Sequence[str], directory: Directory, now: int
    ) -> list[ReceiptBody | RelayError]:
        out: list[ReceiptBody | RelayError] = []
        for token in tokens:
            if not isinstance(token, str):
                out.append(MalformedError("a receipt must be a string (compact JWS)"))
                continue
            try:
                body = verify_receipt(token, directory, now=now).body
            except KeysError as exc:
                out.append(from_keys_error(exc))
                continue
            if body.by != authority:
                out.append(
                    ForbiddenError(
                        f"receipt is by {body.by} but the request is signed by {authority}",
                        code="signer_mismatch",
                    )
                )
            elif body.status not in RECIPIENT_RECEIPTS:
                out.append(
                    RejectedError(
                        f"an authority cannot send a {body.status} receipt",
                        code="status_not_allowed",
                    )
                )
            else:
                out.append(body)
        return out

    async def timeline(self, authority: str, msg_id: str) -> Timeline:
        record = await self._store(self.store.get_message(msg_id))
        if record is None or record.sender != authority:
            raise NotFoundError(f"no message {msg_id} sent by {authority}", code="unknown_message")
        receipts = await self._store(self.store.receipts(msg_id))
        header = unverified_header(record.envelope, what="stored envelope")
        return Timeline(record, header, [record.accepted_receipt, *(r.token for r in receipts)])

    # -- delivery -------------------------------------------------------------------

    async def pump(self, session: Session) -> None:
        """Push queued items to one session until cancelled, within the in-flight window.

        Until it has caught up, the session reads its backlog from the store; after
        that, items committed for it arrive in ``session.buffer`` (published right after
        the commit) and go out without touching the store again.
        """
        assert session.send is not None
        window = self.limits.delivery_window
        while True:
            session.wake.clear()
            room = window - len(session.inflight)
            if room <= 0:
                await session.wake.wait()
                continue
            batch: list[QueueItem] = []
            if not session.caught_up:
                page = min(room, 500)
                resyncs = session.resyncs
                items = await self._store(
                    self.store.pending(session.authority, after=session.covered, limit=page)
                )
                if items:
                    session.covered = items[-1].seq
                if len(items) < page and session.resyncs == resyncs:
                    session.caught_up = True
                batch = [i for i in items if i.seq not in session.inflight]
            while session.buffer and len(batch) < room:
                item = session.buffer.popleft()
                if item.seq > session.covered and item.seq not in session.inflight:
                    batch.append(item)
            if batch:
                session.inflight.update(i.seq for i in batch)
                await session.send(batch)
                continue
            if session.caught_up and not session.buffer:
                await session.wake.wait()

    async def ack(self, session: Session | None, authority: str, seqs: Sequence[int]) -> int:
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seqs):
            raise MalformedError("seqs must be a list of integers")
        removed = await self._store(self.store.ack(authority, seqs))
        # Free the delivery window of every connection of this authority, whichever
        # transport the acknowledgement came by; otherwise a connection whose items were
        # acknowledged elsewhere would stall once its window is full.
        for other in self.hub.sessions.get(authority, ()):
            other.inflight.difference_update(seqs)
            other.wake.set()
        if session is not None:
            session.inflight.difference_update(seqs)
            session.wake.set()
        return removed

    async def queued(self, authority: str) -> int:
        """How many items are waiting for ``authority`` (the WebSocket hello's ``pending``)."""
        return await self._store(self.store.depth(authority))

    async def poll(
        self, authority: str, *, after: int, wait_s: float, limit: int
    ) -> list[QueueItem]:
        """Long-poll: items after ``after``, waiting up to ``wait_s`` for the first one."""
        # Attach before the first read, so an item committed during it still wakes us.
        waiter = Session(authority=authority)
        self.hub.attach(waiter)
        try:
            items = await self._store(self.store.pending(authority, after=after, limit=limit))
            if items or wait_s <= 0:
                return items
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wake.wait(), timeout=wait_s)
            return await self._store(self.store.pending(authority, after=after, limit=limit))
        finally:
            self.hub.detach(waiter, self.clock())

    # -- operators ------------------------------------------------------------------

    def health(self, now: int, *, recent: int = 256) -> dict[str, Any]:
        """Metadata for the operator views (``/ops``, ``/metrics``, ``relay status``); no I/O.

        ``connected``: authority -> open connections; ``last_seen``: authority -> ms
        (``now`` while connected); ``recent``: up to ``recent`` of the latest accepted
        messages, newest first, as (id, sender, recipients incl. fallbacks, accepted at),
        from which relay.status derives per-authority delivery latency.
        """
        connected = {aid: len(group) for aid, group in self.hub.sessions.items() if group}
        last_seen = {**self.hub.last_seen, **dict.fromkeys(connected, now)}
        latest: list[tuple[str, str, tuple[str, ...], int]] = []
        for msg_id, (sender, recipients, _hash, accepted_at) in reversed(self._meta.items()):
            if len(latest) >= recent:
                break
            latest.append((msg_id, sender, tuple(sorted(recipients)), accepted_at))
        return {"connected": connected, "last_seen": last_seen, "recent": latest}
