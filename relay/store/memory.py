"""The reference store: the whole :class:`relay.store.base.Store` contract in plain Python.

This is the contract written out to be read: each method does the obvious thing with
dicts and lists. The SQLite and Redis stores keep the same promises with transactions and
Lua scripts, and one contract suite (``tests/relay/test_store_contract*.py``) runs against all
three, so when they disagree on a detail, this file says what was meant.

There is no I/O and nothing is durable: a restart forgets everything. Use it for tests
and for trying the relay out (``RELAY_STORE=memory``), never for real traffic. It serves
one relay process (``shared = False``). No method awaits anything, so on the event loop
each call is atomic, like a committed transaction.

The lifecycle rules are not here: a receipt moves a message's state as
:func:`keys.lifecycle.transition` says, and a firing timer applies the explicit effects
it is given (:class:`relay.store.base.Escalation`), under the timer's generation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from keys.lifecycle import transition
from keys.merkle import Frontier
from relay.store.base import (
    TERMINAL_STATES,
    AcceptResult,
    Escalation,
    ItemType,
    LogHead,
    MessageRecord,
    NewMessage,
    Pruned,
    QueueItem,
    QueueStats,
    ReceiptRecord,
    StoreUnavailableError,
    Timer,
    log_leaf,
)

# --- the store ------------------------------------------------------------------------------


class MemoryStore:
    """:class:`relay.store.base.Store` in dicts: not durable, one process."""

    shared = False
    """One relay process holds the data: pushes and nonces stay in that process."""

    def __init__(self, *, clock_s: Callable[[], float] = time.time) -> None:
        self._clock_s = clock_s
        """Unix seconds, for forgetting expired nonces."""
        self._open = False
        self._closed = False
        self._messages: dict[str, MessageRecord] = {}
        self._receipts: dict[str, list[ReceiptRecord]] = {}
        """msg_id -> its receipts, in the order received."""
        self._last_seq = 0
        """Seqs are unique across all queues and never reused."""
        self._queues: dict[str, dict[int, QueueItem]] = {}
        """recipient -> seq -> item, in seq order (the order they were added)."""
        self._copies: dict[str, set[tuple[str, int]]] = {}
        """msg_id -> (recipient, seq) of each queued copy of its envelope (expiry withdraws)."""
        self._timers: dict[tuple[str, int], Timer] = {}
        """(msg_id, step) -> timer: one timer per step of a message."""
        self._nonces: dict[str, int] = {}
        """nonce -> until when (Unix seconds) it is remembered."""
        self._attachments: dict[str, tuple[str, int]] = {}
        """digest -> (uploader, uploaded at)."""
        self._log = Frontier()
        self._log_nodes: dict[tuple[int, int], bytes] = {}
        """(level, index) -> hash of every perfect subtree of the log."""

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self._open = not self._closed

    async def close(self) -> None:
        self._open, self._closed = False, True

    async def ping(self) -> None:
        self._check()

    def _check(self) -> None:
        """Refuse like a backend that is not there: before start, and after close."""
        if not self._open:
            raise StoreUnavailableError(
                "store is closed" if self._closed else "store is not started"
            )

    # -- messages -------------------------------------------------------------------

    async def accept(self, messages: Sequence[NewMessage]) -> list[AcceptResult]:
        self._check()
        out: list[AcceptResult] = []
        for m in messages:
            old = self._messages.get(m.id)
            if old is not None:
                if old.env_hash == m.env_hash:
                    out.append(AcceptResult(m.id, "duplicate", old.accepted_receipt))
                else:
                    out.append(AcceptResult(m.id, "conflict", None))
                continue
            self._messages[m.id] = MessageRecord(
                id=m.id,
                sender=m.sender,
                to=m.to,
                fallbacks=m.fallbacks,
                envelope=m.envelope,
                env_hash=m.env_hash,
                created=m.created,
                expires=m.expires,
                priority=m.priority,
                ack_by=m.ack_by,
                accepted_at=m.accepted_at,
                accepted_receipt=m.accepted_receipt,
                state="accepted",
                attachments=m.attachments,
                policy=m.policy,
                log_index=self._append_leaf(m.accepted_receipt),
            )
            for step, due in m.timers:
                self._timers[(m.id, step)] = Timer(m.id, step, due, generation=0)
            seqs = tuple(self._enqueue(r, "envelope", m.id, None, m.accepted_at) for r in m.to)
            out.append(AcceptResult(m.id, "accepted", m.accepted_receipt, seqs))
        return out

    async def get_message(self, msg_id: str) -> MessageRecord | None:
        self._check()
        return self._messages.get(msg_id)

    def _close(self, msg_id: str) -> None:
        """Stop escalation: bump the fencing generation and drop the timers, so a timer
        already on its way finds nothing to do."""
        m = self._messages[msg_id]
        self._messages[msg_id] = replace(m, generation=m.generation + 1)
        for key in [k for k in self._timers if k[0] == msg_id]:
            del self._timers[key]

    # -- receipts -------------------------------------------------------------------

    async def add_receipt(self, receipt: ReceiptRecord, *, notify: str) -> bool:
        (seq,) = await self.add_receipts([(receipt, notify)])
        return seq is not None

    async def add_receipts(self, receipts: Sequence[tuple[ReceiptRecord, str]]) -> list[int | None]:
        self._check()
        return [self._add_receipt(r, notify) for r, notify in receipts]

    def _add_receipt(
        self, r: ReceiptRecord, notify: str, *, apply_transition: bool = True
    ) -> int | None:
        stored = self._receipts.setdefault(r.msg_id, [])
        if any((k.signer, k.status, k.step) == (r.signer, r.status, r.step) for k in stored):
            return None  # already stored (idempotent on signer, status, step): a repeat
        stored.append(replace(r, log_index=self._append_leaf(r.token)))
        seq = self._enqueue(notify, "receipt", r.msg_id, r.token, r.received_at)
        m = self._messages.get(r.msg_id)
        rule = transition(r.status) if apply_transition else None
        if m is not None and rule is not None and m.state in rule.before:
            self._messages[r.msg_id] = replace(m, state=rule.after)
            if rule.closes:
                self._close(r.msg_id)
        return seq

    async def receipts(self, msg_id: str) -> list[ReceiptRecord]:
        self._check()
        return list(self._receipts.get(msg_id, []))

    # -- queues ---------------------------------------------------------------------

    def _enqueue(
        self,
        recipient: str,
        kind: ItemType,
        msg_id: str,
        payload: str | None,
        at: int,
        *,
        reminder: bool = False,
        note: str | None = None,
    ) -> int:
        """Queue one item and return its seq; payload None: a copy of the message's envelope."""
        self._last_seq += 1
        seq = self._last_seq
        if payload is None:
            payload = self._messages[msg_id].envelope
            self._copies.setdefault(msg_id, set()).add((recipient, seq))
        item = QueueItem(seq, recipient, kind, msg_id, payload, at, reminder, note)
        self._queues.setdefault(recipient, {})[seq] = item
        return seq

    async def pending(self, recipient: str, *, after: int, limit: int) -> list[QueueItem]:
        self._check()
        items = [i for i in self._queues.get(recipient, {}).values() if i.seq > after]
        return items[: max(0, limit)]

    async def ack(self, recipient: str, seqs: Sequence[int]) -> int:
        self._check()
        queue = self._queues.get(recipient, {})
        return sum(queue.pop(int(seq), None) is not None for seq in set(seqs))

    async def depth(self, recipient: str) -> int:
        self._check()
        return len(self._queues.get(recipient, {}))

    async def queue_stats(self) -> list[QueueStats]:
        self._check()
        return [
            QueueStats(recipient, len(queue), min(i.enqueued_at for i in queue.values()))
            for recipient, queue in self._queues.items()
            if queue
        ]

    # -- escalation timers ------------------------------------------------------------

    async def due_timers(self, now: int, *, limit: int) -> list[tuple[Timer, MessageRecord]]:
        self._check()
        due = sorted((t for t in self._timers.values() if t.due <= now), key=lambda t: t.due)
        return [(t, self._messages[t.msg_id]) for t in due[: max(0, limit)]]

    async def fire(self, escalations: Sequence[Escalation]) -> list[tuple[int, ...] | None]:
        self._check()
        return [self._fire(e) for e in escalations]

    def _fire(self, e: Escalation) -> tuple[int, ...] | None:
        t = e.timer
        stored = self._timers.get((t.msg_id, t.step))
        m = self._messages.get(t.msg_id)
        if (
            stored is None  # already fired
            or stored.due != t.due  # moved since it was planned (deferred)
            or stored.generation != t.generation
            or m is None
            or m.generation != t.generation  # fenced off by a decision
            or m.state in TERMINAL_STATES  # closed
        ):
            return None
        del self._timers[(t.msg_id, t.step)]
        seqs = [
            self._enqueue(
                i.recipient, i.type, t.msg_id, i.payload, t.due, reminder=i.reminder, note=i.note
            )
            for i in e.items
        ]
        if e.receipt is not None:
            seq = self._add_receipt(e.receipt, e.sender, apply_transition=False)
            if seq is not None:
                seqs.append(seq)
        if e.drop_queued:  # withdraw the copies of the envelope still queued
            for recipient, seq in self._copies.pop(t.msg_id, set()):
                self._queues[recipient].pop(seq, None)
        if e.new_state is not None:
            self._messages[t.msg_id] = replace(self._messages[t.msg_id], state=e.new_state)
        if e.close:
            self._close(t.msg_id)
        m = self._messages[t.msg_id]
        if e.record_step:
            m = replace(m, escalation_step=max(m.escalation_step, t.step))
        if e.released:
            m = replace(m, released=tuple(sorted({*m.released, *e.released})))
        self._messages[t.msg_id] = m
        if e.next_timer is not None and not e.close:
            step, due = e.next_timer
            self._timers[(t.msg_id, step)] = Timer(t.msg_id, step, due, t.generation)
        return tuple(seqs)

    async def timer_stats(self, now: int, *, overdue_after_ms: int) -> tuple[int, int, int | None]:
        self._check()
        dues = [t.due for t in self._timers.values()]
        overdue = sum(due < now - overdue_after_ms for due in dues)
        return len(dues), overdue, min(dues, default=None)

    async def open_escalations(self, *, limit: int) -> list[MessageRecord]:
        self._check()
        escalating = [
            m
            for m in self._messages.values()
            if m.escalation_step > 0 and m.state not in TERMINAL_STATES
        ]
        escalating.sort(key=lambda m: m.accepted_at, reverse=True)
        return escalating[: max(0, limit)]

    # -- coordination between instances (none: one process holds the data) ------------

    async def listen(self, deliver: Callable[[list[QueueItem]], None]) -> None:
        return None  # nothing is committed anywhere else

    async def claim_nonce(self, nonce: str, expires_at: int) -> bool:
        self._check()
        now = self._clock_s()
        self._nonces = {n: until for n, until in self._nonces.items() if until > now}
        if nonce in self._nonces:
            return False
        self._nonces[nonce] = expires_at
        return True

    # -- attachments ----------------------------------------------------------------

    async def put_attachment(self, digest: str, *, uploader: str, size: int, at: int) -> bool:
        self._check()
        if digest in self._attachments:
            return False
        self._attachments[digest] = (uploader, at)
        return True

    async def attachment_uploader(self, digest: str) -> str | None:
        self._check()
        found = self._attachments.get(digest)
        return None if found is None else found[0]

    async def may_read_attachment(self, digest: str, authority: str) -> bool:
        self._check()
        found = self._attachments.get(digest)
        if found is None:
            return False
        return found[0] == authority or any(
            digest in m.attachments and authority in (*m.to, *m.fallbacks)
            for m in self._messages.values()
        )

    # -- the log --------------------------------------------------------------------

    def _append_leaf(self, token: str) -> int:
        index = self._log.size
        for level, at, h in self._log.append(log_leaf(token)):
            self._log_nodes[(level, at)] = h
        return index

    async def log_head(self) -> LogHead:
        self._check()
        return LogHead(self._log.size, self._log.root())

    async def log_nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        self._check()
        return {k: self._log_nodes[k] for k in keys if k in self._log_nodes}

    # -- retention ------------------------------------------------------------------

    async def prune(self, before: int, *, limit: int) -> Pruned:
        self._check()
        old = sorted(
            (
                m
                for m in self._messages.values()
                if m.accepted_at < before and m.state in TERMINAL_STATES
            ),
            key=lambda m: m.accepted_at,
        )[: max(0, limit)]
        doomed = {m.id for m in old}
        receipts = sum(len(self._receipts.pop(msg_id, [])) for msg_id in doomed)
        queued = 0
        for msg_id in doomed:
            del self._messages[msg_id]
            # The queued copies of its envelope cannot be delivered without it; queued
            # receipts and notes carry their own payload and stay owed.
            for recipient, seq in self._copies.pop(msg_id, set()):
                queued += self._queues[recipient].pop(seq, None) is not None
        for key in [k for k in self._timers if k[0] in doomed]:
            del self._timers[key]
        referenced = {d for m in self._messages.values() for d in m.attachments}
        gone = tuple(
            sorted(
                d for d, (_, at) in self._attachments.items() if at < before and d not in referenced
            )
        )
        for d in gone:
            del self._attachments[d]
        return Pruned(len(doomed), receipts, queued, gone)
