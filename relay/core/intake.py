"""Intake: what authorities submit (envelopes and receipts), verified and committed.

:meth:`Intake.submit` verifies each envelope against the current directory, signs the
``accepted`` receipt, snapshots the escalation schedule and commits the batch; the
receipts it returns are the durable promise. :meth:`Intake.submit_receipts` verifies
recipients' receipts and commits them (the store moves the message's state with
:func:`keys.lifecycle.transition`). Both hand what they committed to :class:`Delivery`
right after the commit. A bounded :class:`MessageIndex` keeps each recent message's
sender, recipients and hash, so a receipt costs no read.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol, TypeVar

from keys.directory import Directory
from keys.envelope import VerifiedEnvelope, verify_envelope
from keys.errors import KeysError
from keys.identity import Identity
from keys.jws import unverified_header
from keys.lifecycle import Schedule, Step, schedule
from keys.models import ReceiptBody
from keys.receipts import receipt_body, verify_receipt
from relay.core.delivery import Clock, Delivery
from relay.core.errors import (
    ConflictError,
    ForbiddenError,
    MalformedError,
    NotFoundError,
    RejectedError,
    RelayError,
    from_keys_error,
    guard,
)
from relay.core.metrics import Metrics
from relay.core.policy import DEFAULT_POLICIES, PolicyConfig
from relay.core.signing import BatchSigner
from relay.store.base import (
    AcceptResult,
    MessageRecord,
    NewMessage,
    QueueItem,
    ReceiptRecord,
    Store,
)

T = TypeVar("T")
RECIPIENT_RECEIPTS = frozenset({"delivered", "acknowledged", "rejected"})
META_CACHE = 100_000
THREAD_VERIFY_MIN = 8
"""Batches at least this large are verified in a worker thread (libsodium drops the GIL)."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_envelope_bytes: int = 4 * 1024 * 1024
    max_batch: int = 100
    max_message_lifetime_ms: int = 90 * 86_400_000
    clock_skew_ms: int = 5 * 60_000


class Reachable(Protocol):
    @property
    def reachable(self) -> bool: ...
    @property
    def since(self) -> int | None: ...


Reachability = Callable[[str, int], Reachable]
"""(authority, now) -> whether its daemon is reachable (``ReadModel.reachability``)."""


@dataclass(frozen=True, slots=True)
class Submitted:
    id: str
    receipt: str
    duplicate: bool
    presence: tuple[tuple[str, bool, int | None], ...] = ()
    """(recipient, reachable, unreachable since) for each ``to`` of a new message."""
    schedule: tuple[tuple[int, int], ...] = ()
    """(step, due) of a new message's escalation plan."""


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


class MessageMeta(NamedTuple):
    sender: str
    recipients: frozenset[str]
    """``to`` and fallbacks: who may send receipts about it."""
    env_hash: str
    accepted_at: int


class MessageIndex:
    """Recently accepted messages' metadata, newest last (bounded)."""

    def __init__(self, size: int = META_CACHE) -> None:
        self.size = size
        self._meta: OrderedDict[str, MessageMeta] = OrderedDict()

    def remember(
        self, msg_id: str, sender: str, recipients: frozenset[str], env_hash: str, accepted_at: int
    ) -> None:
        self._meta[msg_id] = MessageMeta(sender, recipients, env_hash, accepted_at)
        if len(self._meta) > self.size:
            self._meta.popitem(last=False)

    def get(self, msg_id: str) -> MessageMeta | None:
        return self._meta.get(msg_id)

    def forget_before(self, before: int) -> None:
        """Drop the messages accepted before ``before`` (retention pruned them)."""
        for msg_id in [k for k, m in self._meta.items() if m.accepted_at < before]:
            del self._meta[msg_id]

    def recent(self, limit: int) -> list[tuple[str, MessageMeta]]:
        """Up to ``limit`` of the latest accepted messages, newest first."""
        out: list[tuple[str, MessageMeta]] = []
        for item in reversed(self._meta.items()):
            if len(out) >= limit:
                break
            out.append(item)
        return out


class Intake:
    def __init__(
        self,
        *,
        store: Store,
        delivery: Delivery,
        identity: Identity,
        directory: Callable[[], Directory],
        clock: Clock,
        index: MessageIndex,
        limits: Limits | None = None,
        policies: Mapping[str, PolicyConfig] | None = None,
        metrics: Metrics | None = None,
        reachability: Reachability | None = None,
        signer: BatchSigner | None = None,
    ) -> None:
        self.store = store
        self.signer = signer or BatchSigner(identity)
        """Signs accepted receipts with those of concurrent submissions (one batch)."""
        self.reachability = reachability
        self.delivery = delivery
        self.identity = identity
        self._directory = directory
        self.clock = clock
        self.index = index
        self.limits = limits or Limits()
        self.policies = dict(policies or DEFAULT_POLICIES)
        self.delays: dict[str, tuple[list[tuple[int, int]], bool]] = {
            prio: (p.offsets(), p.working_hours)
            for prio, p in {**DEFAULT_POLICIES, **self.policies}.items()
        }
        """Each priority's (step, delay) offsets and working-hours flag, as a message
        accepted now gets them (parsed once; ``GET /v1/policy`` says them)."""
        self.metrics = metrics
        self._background: set[asyncio.Future[Any]] = set()

    @property
    def directory(self) -> Directory:
        return self._directory()

    async def _message_meta(self, msg_id: str) -> MessageMeta | None:
        meta = self.index.get(msg_id)
        if meta is None:
            record = await guard(self.store.get_message(msg_id))
            if record is None:
                return None
            meta = MessageMeta(
                record.sender,
                frozenset((*record.to, *record.fallbacks)),
                record.env_hash,
                record.accepted_at,
            )
            self.index.remember(msg_id, *meta)
        return meta

    # -- submit ---------------------------------------------------------------------

    async def submit(
        self, authority: str, tokens: Sequence[str], *, plan: bool = False
    ) -> list[Submitted | RelayError]:
        """Verify, commit and queue envelopes from ``authority``; one outcome per token.

        Returns only after the accepted ones are committed: the receipts in the result
        are the durable promise. With ``plan`` (a single envelope sent alone), a new
        message's result also says who is reachable and when its steps are due.
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
                    # Only the sender's own upload: knowing another authority's
                    # digest must not make its ciphertext readable by our recipients.
                    if await guard(self.store.attachment_uploader(digest)) != authority:
                        idx = checked.index(msg)
                        checked[idx] = RejectedError(
                            f"attachment {digest} has not been uploaded by {authority}",
                            code="attachment_missing",
                        )
                        break
        # The accepted receipts, signed with those of concurrent submissions as one batch.
        positions = [i for i, c in enumerate(checked) if isinstance(c, NewMessage)]
        bodies = [
            receipt_body(
                self.identity, msg_id=m.id, envelope_hash=m.env_hash, status="accepted", now=now
            )
            for m in (checked[i] for i in positions)
            if isinstance(m, NewMessage)
        ]
        for i, receipt in zip(positions, await self.signer.sign(bodies, now=now), strict=True):
            m = checked[i]
            assert isinstance(m, NewMessage)
            checked[i] = replace(m, accepted_receipt=receipt)
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
            elif res.outcome == "duplicate":
                assert res.receipt is not None
                out.append(Submitted(item.id, res.receipt, True))
            else:
                assert res.receipt is not None
                out.append(
                    Submitted(item.id, res.receipt, False, *self._plan(item, now))
                    if plan
                    else Submitted(item.id, res.receipt, False)
                )
        return out

    def _plan(
        self, msg: NewMessage, now: int
    ) -> tuple[tuple[tuple[str, bool, int | None], ...], tuple[tuple[int, int], ...]]:
        """What the sender is told about a new message: who is reachable, and when its
        escalation steps are due."""
        presence: list[tuple[str, bool, int | None]] = []
        if self.reachability is not None:
            for aid in msg.to:
                r = self.reachability(aid, now)
                presence.append((aid, r.reachable, None if r.reachable else r.since))
        snap = Schedule.loads(msg.policy)  # a single submission only: parsed back here
        return tuple(presence), (snap.steps if snap is not None else ())

    async def _shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a commit-then-publish step to its end even if the caller is cancelled (a
        client went away): a committed item must reach the connected sessions."""
        task = asyncio.ensure_future(guard(coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return await asyncio.shield(task)

    async def _accept_and_publish(self, fresh: list[NewMessage]) -> list[AcceptResult]:
        results = await self.store.accept(fresh)
        queued: list[QueueItem] = []
        for msg, res in zip(fresh, results, strict=True):
            if res.outcome != "accepted":
                continue
            self.index.remember(
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
        self.delivery.publish(queued)
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
            if directory.sealable(r.aid, r.kid):
                continue
            entry = directory.get(r.aid)
            if entry is None or entry.role == "relay":
                raise RejectedError(
                    f"recipient {r.aid} is not in the directory", code="unknown_recipient"
                )
            raise RejectedError(
                f"message is sealed to key {r.kid}, which {r.aid} does not hold",
                code="unknown_recipient_key",
            )
        offsets, working_hours = self.delays[h.prio]
        snap = schedule(
            offsets,
            priority=h.prio,
            accepted_at=now,
            ack_by=h.ack_by,
            working_hours=working_hours,
        )
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
            accepted_receipt="",  # signed with the whole batch by submit()
            attachments=tuple(a.h for a in h.att),
            policy=snap.dumps(),
            timers=((Step.REMIND, snap.steps[0][1]), (Step.EXPIRE, h.expires)),
        )

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
            if meta is None or authority not in meta.recipients:
                out.append(
                    NotFoundError(
                        f"no message {item.msg} addressed to {authority}", code="unknown_message"
                    )
                )
                continue
            if item.env != meta.env_hash:
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
            batch.append((record, meta.sender))
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
        self.delivery.publish(items)
        return seqs

    def _observe(self, record: ReceiptRecord, now: int) -> None:
        if self.metrics is None:
            return
        self.metrics.receipts.labels(status=record.status).inc()
        meta = self.index.get(record.msg_id)
        if meta is None:
            return
        age = max(0.0, (now - meta.accepted_at) / 1000)
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
        record = await guard(self.store.get_message(msg_id))
        if record is None or record.sender != authority:
            raise NotFoundError(f"no message {msg_id} sent by {authority}", code="unknown_message")
        receipts = await guard(self.store.receipts(msg_id))
        header = unverified_header(record.envelope, what="stored envelope")
        return Timeline(record, header, [record.accepted_receipt, *(r.token for r in receipts)])
