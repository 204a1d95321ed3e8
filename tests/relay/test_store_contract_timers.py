"""The Store contract for escalation timers: every backend in FACTORIES must pass this.

Timers fire once; a fencing generation (bumped by an acknowledgement or a rejection)
turns a late firing into a no-op; expiry withdraws queued copies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.store.base import (
    STEP_EXPIRE,
    STEP_RELEASE,
    STEP_REMIND,
    Escalation,
    NewItem,
    NewMessage,
    ReceiptRecord,
    Store,
)
from tests.netfixture import NOW
from tests.storefixture import FACTORIES, message, opened, receipt

MIN = 60_000


@pytest.fixture(params=list(FACTORIES))
async def tstore(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with opened(str(request.param), tmp_path / "store") as s:
        yield s


def timed(**kw: object) -> NewMessage:
    m = message(fallbacks=("fr-desk",), **kw)  # type: ignore[arg-type]
    return dataclasses.replace(
        m,
        policy='{"priority":"urgent","steps":[[1,1],[2,2],[3,3]]}',
        timers=((STEP_REMIND, NOW + 10 * MIN), (STEP_EXPIRE, m.expires)),
    )


def escalated(m: NewMessage, step: int, at: int) -> ReceiptRecord:
    return ReceiptRecord(m.id, "escalated", "relay-eu", at, f"esc.{m.id}.{step}", at, step=step)


async def test_timers_come_due_with_their_message(tstore: Store) -> None:
    m = timed()
    await tstore.accept([m])
    assert await tstore.due_timers(NOW + 10 * MIN - 1, limit=10) == []
    due = await tstore.due_timers(NOW + 10 * MIN, limit=10)
    assert [(t.msg_id, t.step, t.due, t.generation) for t, _ in due] == [
        (m.id, STEP_REMIND, NOW + 10 * MIN, 0)
    ]
    record = due[0][1]
    assert (
        record.id == m.id
        and record.to == m.to
        and record.fallbacks == ("fr-desk",)
        and record.policy == m.policy
    )
    pending, overdue, nxt = await tstore.timer_stats(NOW, overdue_after_ms=1000)
    assert (pending, overdue, nxt) == (2, 0, NOW + 10 * MIN)
    assert (await tstore.timer_stats(NOW + 20 * MIN, overdue_after_ms=1000))[1] == 1


async def test_fire_applies_everything_once(tstore: Store) -> None:
    m = timed()
    await tstore.accept([m])
    ((timer, _),) = await tstore.due_timers(NOW + 10 * MIN, limit=10)
    esc = Escalation(
        timer=timer,
        items=(
            NewItem("fr-oclcc", "envelope", None, True, "reminder"),
            NewItem("fr-ca", "escalation", "esc-token", False, "note"),
        ),
        receipt=escalated(m, STEP_REMIND, NOW + 10 * MIN),
        sender="it-tpc",
        next_timer=(STEP_RELEASE, NOW + 30 * MIN),
        record_step=True,
    )
    (seqs,) = await tstore.fire([esc])
    assert seqs is not None and len(seqs) == 3
    assert await tstore.fire([esc]) == [None]  # once
    fr = await tstore.pending("fr-oclcc", after=0, limit=10)
    assert [(i.type, i.reminder, i.note) for i in fr] == [
        ("envelope", False, None),
        ("envelope", True, "reminder"),
    ]
    assert fr[1].payload == m.envelope
    ca = await tstore.pending("fr-ca", after=0, limit=10)
    assert [(i.type, i.payload) for i in ca] == [("escalation", "esc-token")]
    sender = await tstore.pending("it-tpc", after=0, limit=10)
    assert [i.payload for i in sender] == [f"esc.{m.id}.1"]
    record = await tstore.get_message(m.id)
    assert record is not None and record.escalation_step == STEP_REMIND
    assert [r.id for r in await tstore.open_escalations(limit=10)] == [m.id]
    nxt = await tstore.due_timers(NOW + 30 * MIN, limit=10)
    assert [(t.step, t.generation) for t, _ in nxt] == [(STEP_RELEASE, 0)]
    # A second escalated receipt (another step) is kept too.
    ((t2, _),) = nxt
    (s2,) = await tstore.fire(
        [
            Escalation(
                timer=t2,
                receipt=escalated(m, STEP_RELEASE, NOW + 30 * MIN),
                sender="it-tpc",
                released=("fr-desk",),
                record_step=True,
            )
        ]
    )
    assert s2 is not None
    assert [(r.status, r.step) for r in await tstore.receipts(m.id)] == [
        ("escalated", 1),
        ("escalated", 2),
    ]
    record = await tstore.get_message(m.id)
    assert record is not None and record.released == ("fr-desk",)
    assert record.escalation_step == STEP_RELEASE


@pytest.mark.parametrize("status", ["acknowledged", "rejected"])
async def test_a_decision_fences_off_a_late_timer(tstore: Store, status: str) -> None:
    m = timed()
    await tstore.accept([m])
    ((timer, _),) = await tstore.due_timers(NOW + 10 * MIN, limit=10)
    await tstore.add_receipt(receipt(m, status=status), notify="it-tpc")
    late = Escalation(
        timer=timer,
        receipt=escalated(m, 1, NOW + 10 * MIN),
        sender="it-tpc",
        next_timer=(STEP_RELEASE, NOW + 30 * MIN),
    )
    assert await tstore.fire([late]) == [None]
    assert await tstore.due_timers(NOW + 365 * 24 * 60 * MIN, limit=10) == []
    assert [r.status for r in await tstore.receipts(m.id)] == [status]
    assert await tstore.open_escalations(limit=10) == []


async def test_expiry_closes_and_withdraws_queued_copies(tstore: Store) -> None:
    m = timed()
    await tstore.accept([m])
    due = await tstore.due_timers(m.expires, limit=10)
    expire = next(t for t, _ in due if t.step == STEP_EXPIRE)
    exp = ReceiptRecord(m.id, "expired", "relay-eu", m.expires, f"exp.{m.id}", m.expires)
    (seqs,) = await tstore.fire(
        [
            Escalation(
                timer=expire,
                receipt=exp,
                sender="it-tpc",
                new_state="expired",
                close=True,
                drop_queued=True,
            )
        ]
    )
    assert seqs is not None
    assert await tstore.pending("fr-oclcc", after=0, limit=10) == []
    record = await tstore.get_message(m.id)
    assert record is not None and record.state == "expired"
    assert await tstore.due_timers(m.expires + DAY_MS, limit=10) == []  # all timers gone


async def test_a_deferred_step_moves_without_counting_as_fired(tstore: Store) -> None:
    m = timed()
    await tstore.accept([m])
    ((timer, _),) = await tstore.due_timers(NOW + 10 * MIN, limit=10)
    (seqs,) = await tstore.fire(
        [Escalation(timer=timer, next_timer=(STEP_REMIND, NOW + 60 * MIN), deferred=True)]
    )
    assert seqs == ()
    assert await tstore.due_timers(NOW + 59 * MIN, limit=10) == []
    assert [t.step for t, _ in await tstore.due_timers(NOW + 60 * MIN, limit=10)] == [STEP_REMIND]
    record = await tstore.get_message(m.id)
    assert record is not None and record.escalation_step == 0
    # A stale plan for the timer as it was before it moved fires nothing: the timer is
    # claimed by (message, step, due, generation), so the moved timer stays.
    stale = Escalation(
        timer=timer,
        items=(NewItem("fr-oclcc", "envelope", None, True, "reminder"),),
        record_step=True,
    )
    assert await tstore.fire([stale]) == [None]
    assert not [i for i in await tstore.pending("fr-oclcc", after=0, limit=10) if i.reminder]
    assert [t.due for t, _ in await tstore.due_timers(NOW + 60 * MIN, limit=10)] == [NOW + 60 * MIN]


async def test_a_negative_limit_reads_nothing(tstore: Store) -> None:
    await tstore.accept([timed()])
    assert await tstore.pending("fr-oclcc", after=0, limit=-1) == []
    assert await tstore.due_timers(NOW + 10 * MIN, limit=-1) == []


DAY_MS = 24 * 60 * MIN
