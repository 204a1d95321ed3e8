"""The escalation engine: fires durable timers, once, fenced by a generation token.

Each accepted message starts with two timers: its first escalation step and its expiry.
:meth:`EscalationEngine.tick` takes the timers due now, decides what each step does
(:meth:`plan`, pure), and asks the store to apply all of them atomically. The store
applies a step only if its timer still exists with the same generation and the message
is still open, so a step never runs twice, and never after an acknowledgement or a
rejection (which bump the generation and drop the timers in the same transaction).

Steps:

1. **remind**: push the message again to its recipients, flagged as a reminder;
2. **release**: deliver it to the fallback recipients (whose wrapped keys it already
   carries) and notify each recipient's deputies and duty desk from the directory;
3. **notify**: notify each recipient's supervising authority, and the operators.

Each step adds a relay-signed ``escalated`` receipt to the sender's timeline; the
notification sent to deputies, duty desks and supervisors is that same signed receipt
(metadata only). Expiry closes the message with a relay-signed ``expired`` receipt and
withdraws the copies still queued. Time always comes from the injected clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from keys.receipts import sign_receipt
from relay.core.policy import Snapshot
from relay.store.base import (
    STEP_EXPIRE,
    STEP_NOTIFY,
    STEP_RELEASE,
    STEP_REMIND,
    Escalation,
    MessageRecord,
    NewItem,
    QueueItem,
    ReceiptRecord,
    Timer,
)

if TYPE_CHECKING:
    from relay.core.relay import RelayCore

log = logging.getLogger(__name__)
STEP_NAMES = {
    STEP_REMIND: "remind",
    STEP_RELEASE: "release",
    STEP_NOTIFY: "notify",
    STEP_EXPIRE: "expire",
}
TICK_BATCH = 2000
OVERDUE_AFTER_MS = 1000


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


class EscalationEngine:
    def __init__(self, core: RelayCore) -> None:
        self.core = core
        self.overdue = 0
        self.pending = 0

    # -- planning (pure: no I/O) ---------------------------------------------------------

    def plan(self, timer: Timer, record: MessageRecord, now: int) -> Escalation:
        snap = Snapshot.loads(record.policy)
        if timer.step == STEP_EXPIRE:
            return self._expire(timer, record, now)
        if snap is None:  # a message accepted without a policy: nothing to escalate
            return Escalation(timer=timer)
        directory = self.core.directory
        if snap.working_hours and timer.step in (STEP_REMIND, STEP_NOTIFY):
            opens = []
            for aid in record.to:
                entry = directory.get(aid)
                if entry is not None and entry.hours is not None:
                    opens.append(entry.hours.next_open(now))
            if opens and min(opens) > now:
                # Nobody is at their desk: try again when the first office opens.
                return Escalation(timer=timer, next_timer=(timer.step, min(opens)), deferred=True)
        items: list[NewItem] = []
        released: tuple[str, ...] = ()
        nxt = snap.next_after(timer.step)
        due = snap.due(STEP_REMIND) or timer.due
        if timer.step == STEP_REMIND:
            reason = f"not acknowledged by {_when(due)}: reminded {', '.join(record.to)}"
            note = f"reminder: not acknowledged by {_when(due)}"
            items = [NewItem(r, "envelope", None, True, note) for r in record.to]
        elif timer.step == STEP_RELEASE:
            chain: list[str] = []
            for aid in record.to:
                entry = directory.get(aid)
                if entry is not None:
                    chain += [*entry.escalation.deputies]
                    if entry.escalation.duty_desk:
                        chain.append(entry.escalation.duty_desk)
            released = tuple(f for f in record.fallbacks if directory.get(f) is not None)
            notify = [a for a in dict.fromkeys(chain) if a not in released and a != record.sender]
            parts = []
            if released:
                parts.append(f"released to {', '.join(released)}")
            if notify:
                parts.append(f"notified {', '.join(notify)}")
            reason = f"{', '.join(record.to)} did not acknowledge: " + (
                "; ".join(parts) or "no fallback or deputy named"
            )
            note = f"released to you: {', '.join(record.to)} did not acknowledge by {_when(due)}"
            items = [NewItem(f, "envelope", None, False, note) for f in released]
            items += [
                NewItem(a, "escalation", None, False, f"escalation: {reason}") for a in notify
            ]
        else:  # STEP_NOTIFY
            supervisors = []
            for aid in record.to:
                entry = directory.get(aid)
                if entry is not None and entry.escalation.supervisor:
                    supervisors.append(entry.escalation.supervisor)
            supervisors = [s for s in dict.fromkeys(supervisors) if s != record.sender]
            reason = (
                f"{', '.join(record.to)} did not acknowledge: notified "
                + (f"supervising authority {', '.join(supervisors)} and " if supervisors else "")
                + "the operators"
            )
            items = [
                NewItem(s, "escalation", None, False, f"escalation: {reason}") for s in supervisors
            ]
            log.warning(
                "escalation to operators: message %s from %s to %s: %s",
                record.id,
                record.sender,
                ",".join(record.to),
                reason,
            )
        token = sign_receipt(
            self.core.identity,
            msg_id=record.id,
            envelope_hash=record.env_hash,
            status="escalated",
            now=now,
            reason=reason[:500],
            step=timer.step,
        )
        items = [
            NewItem(i.recipient, i.type, token, i.reminder, i.note) if i.type == "escalation" else i
            for i in items
        ]
        receipt = ReceiptRecord(
            record.id, "escalated", self.core.identity.id, now, token, now, step=timer.step
        )
        return Escalation(
            timer=timer,
            items=tuple(items),
            receipt=receipt,
            sender=record.sender,
            next_timer=nxt,
            released=released,
        )

    def _expire(self, timer: Timer, record: MessageRecord, now: int) -> Escalation:
        token = sign_receipt(
            self.core.identity,
            msg_id=record.id,
            envelope_hash=record.env_hash,
            status="expired",
            now=now,
            reason="expired before any recipient acknowledged",
        )
        receipt = ReceiptRecord(record.id, "expired", self.core.identity.id, now, token, now)
        return Escalation(
            timer=timer,
            receipt=receipt,
            sender=record.sender,
            new_state="expired",
            drop_queued=True,
        )

    # -- firing ------------------------------------------------------------------------

    async def tick(self) -> int:
        """Fire every timer due now (in batches). Returns how many steps took effect."""
        fired = 0
        while True:
            now = self.core.clock()
            due = await self.core._store(self.core.store.due_timers(now, limit=TICK_BATCH))
            if not due:
                return fired
            if len(due) < 16:
                plans = self._plan_all(due, now)
            else:  # signing many receipts: off the event loop
                plans = await asyncio.to_thread(self._plan_all, due, now)
            results = await self.core._store(self.core.store.fire(plans))
            fired += self._publish(plans, [r for _, r in due], results)
            if len(due) < TICK_BATCH:
                return fired

    def _plan_all(self, due: Sequence[tuple[Timer, MessageRecord]], now: int) -> list[Escalation]:
        return [self.plan(t, r, now) for t, r in due]

    def _publish(
        self,
        plans: Sequence[Escalation],
        records: Sequence[MessageRecord],
        results: Sequence[tuple[int, ...] | None],
    ) -> int:
        items: list[QueueItem] = []
        fired = 0
        metrics = self.core.metrics
        for plan, record, seqs in zip(plans, records, results, strict=True):
            if seqs is None or plan.deferred:
                continue
            fired += 1
            step = STEP_NAMES.get(plan.timer.step, str(plan.timer.step))
            if metrics is not None:
                metrics.escalations.labels(step=step).inc()
                if plan.new_state == "expired" and record.state == "accepted":
                    metrics.dead_lettered.inc()
                if plan.timer.step == STEP_REMIND:
                    metrics.redeliveries.inc(len(record.to))
            now = plan.receipt.received_at if plan.receipt else plan.timer.due
            for item, seq in zip(plan.items, seqs, strict=False):
                items.append(
                    QueueItem(
                        seq,
                        item.recipient,
                        item.type,
                        record.id,
                        item.payload or record.envelope,
                        now,
                        item.reminder,
                        item.note,
                    )
                )
            if plan.receipt is not None and len(seqs) > len(plan.items):
                items.append(
                    QueueItem(seqs[-1], plan.sender, "receipt", record.id, plan.receipt.token, now)
                )
        self.core.hub.publish(items)
        return fired

    async def audit(self) -> None:
        """Count pending and overdue timers; an overdue timer is an alarm."""
        now = self.core.clock()
        pending, overdue, _ = await self.core._store(
            self.core.store.timer_stats(now, overdue_after_ms=OVERDUE_AFTER_MS)
        )
        self.pending, self.overdue = pending, overdue
        if self.core.metrics is not None:
            self.core.metrics.pending_timers.set(pending)
            self.core.metrics.overdue_timers.set(overdue)
        if overdue:
            log.warning(
                "auditor: %d escalation timers are overdue by more than %d ms",
                overdue,
                OVERDUE_AFTER_MS,
            )

    async def run(self, *, interval_s: float = 0.25, audit_every_s: float = 5.0) -> None:
        """Tick forever; one failing round is logged and the loop goes on."""
        loop = asyncio.get_running_loop()
        next_audit = 0.0
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("escalation round failed")
            if loop.time() >= next_audit:
                next_audit = loop.time() + audit_every_s
                try:
                    await self.audit()
                except Exception:
                    log.exception("timer audit failed")
            await asyncio.sleep(interval_s)
