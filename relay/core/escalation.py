"""The escalation engine: fires durable timers, once, fenced by a generation token.

Each accepted message starts with two timers: its first escalation step and its expiry.
:meth:`EscalationEngine.tick` takes the timers due now, asks :func:`keys.lifecycle.plan_step`
(pure: the one place the steps are defined) what each does, signs the step's statement
as a relay receipt, and asks the store to apply all of them atomically. The store
applies a step only if its timer still exists with the same generation and the message
is still open, so a step never runs twice, and never after an acknowledgement or a
rejection (which bump the generation and drop the timers in the same transaction).
Everything a person or an operator sees (WARNING lines, counters, pushes) happens after
that commit, and only for the steps that took effect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import NamedTuple

from keys.directory import Directory
from keys.identity import Identity
from keys.lifecycle import STEP_NAMES, MessageFacts, StepEffects, plan_step
from keys.receipts import receipt_body, sign_receipts
from relay.core.delivery import Clock, Delivery
from relay.core.errors import UnavailableError, guard
from relay.core.metrics import Metrics
from relay.store.base import (
    STEP_REMIND,
    Escalation,
    MessageRecord,
    NewItem,
    QueueItem,
    ReceiptRecord,
    Store,
    Timer,
)


class _Planned(NamedTuple):
    record: MessageRecord
    effects: StepEffects
    store: Escalation


log = logging.getLogger(__name__)
__all__ = ["OVERDUE_AFTER_MS", "STEP_NAMES", "EscalationEngine"]
TICK_BATCH = 2000
OVERDUE_AFTER_MS = 1000


def _signed(esc: Escalation, token: str) -> Escalation:
    """``esc`` with its receipt's token (also the payload of its escalation notices)."""
    assert esc.receipt is not None
    items = tuple(replace(i, payload=token) if i.type == "escalation" else i for i in esc.items)
    return replace(esc, items=items, receipt=replace(esc.receipt, token=token))


class EscalationEngine:
    def __init__(
        self,
        *,
        store: Store,
        delivery: Delivery,
        identity: Identity,
        directory: Callable[[], Directory],
        clock: Clock,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.delivery = delivery
        self.identity = identity
        self._directory = directory
        self.clock = clock
        self.metrics = metrics
        self.overdue = 0
        self.pending = 0

    # -- planning (no I/O) -------------------------------------------------------------

    def plan(self, timer: Timer, record: MessageRecord, now: int) -> _Planned:
        """The lifecycle's effects for this timer, with the statement signed."""
        (planned,) = self._plan_all([(timer, record)], now)
        return planned

    def _unsigned(
        self, timer: Timer, record: MessageRecord, fx: StepEffects, now: int
    ) -> tuple[Escalation, dict[str, object] | None]:
        """What the store applies, with the receipt's statement still to sign (its token
        empty) and that statement."""
        receipt: ReceiptRecord | None = None
        body: dict[str, object] | None = None
        token = ""
        if fx.statement is not None:
            st = fx.statement
            body = receipt_body(
                self.identity,
                msg_id=record.id,
                envelope_hash=record.env_hash,
                status=st.status,
                now=now,
                reason=st.reason[:500],
                step=st.step or None,
            )
            receipt = ReceiptRecord(
                record.id, st.status, self.identity.id, now, token, now, step=st.step
            )
        items = tuple(
            NewItem(
                n.recipient,
                n.kind,
                token if n.kind == "escalation" else None,
                n.reminder,
                n.note or None,
            )
            for n in fx.notify
        )
        return Escalation(
            timer=timer,
            items=items,
            receipt=receipt,
            sender=record.sender,
            next_timer=fx.next_timer,
            new_state=fx.set_state,
            close=fx.close,
            record_step=fx.record_step,
            released=fx.release,
            drop_queued=fx.withdraw_queued,
            deferred=fx.deferred,
        ), body

    # -- firing ------------------------------------------------------------------------

    async def tick(self) -> int:
        """Fire every timer due now (in batches). Returns how many steps took effect."""
        fired = 0
        while True:
            now = self.clock()
            due = await guard(self.store.due_timers(now, limit=TICK_BATCH))
            if not due:
                return fired
            if len(due) < 16:
                plans = self._plan_all(due, now)
            else:  # signing many receipts: off the event loop
                plans = await asyncio.to_thread(self._plan_all, due, now)
            results = await guard(self.store.fire([p.store for p in plans]))
            fired += self._publish(plans, results)
            if len(due) < TICK_BATCH:
                return fired

    def _plan_all(self, due: Sequence[tuple[Timer, MessageRecord]], now: int) -> list[_Planned]:
        """Plan every due timer; the round's statements are signed as one batch."""
        planned: list[_Planned] = []
        bodies: list[tuple[int, dict[str, object]]] = []
        for timer, record in due:
            facts = MessageFacts(
                record.id, record.sender, record.to, record.fallbacks, record.policy
            )
            effects = plan_step(timer.step, facts, self._directory().get, now)
            esc, body = self._unsigned(timer, record, effects, now)
            if body is not None:
                bodies.append((len(planned), body))
            planned.append(_Planned(record, effects, esc))
        if bodies:
            tokens = sign_receipts(self.identity, [b for _, b in bodies], now=now)
            for (i, _), token in zip(bodies, tokens, strict=True):
                record, effects, esc = planned[i]
                planned[i] = _Planned(record, effects, _signed(esc, token))
        return planned

    def _publish(
        self, planned: Sequence[_Planned], results: Sequence[tuple[int, ...] | None]
    ) -> int:
        """After the commit: pushes, counters and warnings for the steps that took effect."""
        items: list[QueueItem] = []
        fired = 0
        metrics = self.metrics
        for (record, effects, plan), seqs in zip(planned, results, strict=True):
            if seqs is None or plan.deferred:
                continue  # fenced off, fired elsewhere, or only moved: nothing to tell
            fired += 1
            step = STEP_NAMES.get(plan.timer.step, str(plan.timer.step))
            if effects.alert_operators:
                log.warning(
                    "escalation to operators: message %s from %s to %s: %s",
                    record.id,
                    record.sender,
                    ",".join(record.to),
                    effects.statement.reason if effects.statement else "",
                )
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
        self.delivery.publish(items)
        return fired

    async def audit(self) -> None:
        """Count pending and overdue timers; an overdue timer is an alarm."""
        now = self.clock()
        pending, overdue, _ = await guard(
            self.store.timer_stats(now, overdue_after_ms=OVERDUE_AFTER_MS)
        )
        self.pending, self.overdue = pending, overdue
        if self.metrics is not None:
            self.metrics.pending_timers.set(pending)
            self.metrics.overdue_timers.set(overdue)
        if overdue:
            log.warning(
                "auditor: %d escalation timers are overdue by more than %d ms",
                overdue,
                OVERDUE_AFTER_MS,
            )

    async def run(self, *, interval_s: float = 0.25, audit_every_s: float = 5.0) -> None:
        """Tick forever; a failing round is logged and the loop goes on.

        While the store is unavailable, one WARNING says so when rounds start failing
        and one INFO line when they work again (not a line every ``interval_s``); any
        other failure is logged with its traceback each time (a bug to see)."""
        loop = asyncio.get_running_loop()
        next_audit = 0.0
        outage: str | None = None
        while True:
            try:
                await self.tick()
                if loop.time() >= next_audit:
                    next_audit = loop.time() + audit_every_s
                    await self.audit()
            except UnavailableError as exc:
                if outage is None:
                    outage = exc.detail
                    log.warning("escalation paused: %s (retrying every %.2g s)", outage, interval_s)
            except Exception:
                log.exception("escalation round failed")
            else:
                if outage is not None:
                    log.info("escalation resumed: the store answers again")
                    outage = None
            await asyncio.sleep(interval_s)
