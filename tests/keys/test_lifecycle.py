"""keys.lifecycle: the one table of states and transitions, and what each step does."""

from __future__ import annotations

import pytest

from keys.lifecycle import (
    CLOSED,
    STATES,
    MessageFacts,
    Notify,
    Statement,
    Step,
    plan_step,
    schedule,
    state_after,
    state_from_receipts,
    transition,
)
from keys.models import DirectoryEntry, EscalationChain

MIN = 60_000
T0 = 1_780_000_000_000


def test_transitions_on_receipts() -> None:
    assert state_after("accepted", "delivered") == "delivered"
    assert state_after("delivered", "delivered") == "delivered"
    for decision in ("acknowledged", "rejected", "expired"):
        assert state_after("accepted", decision) == decision
        assert state_after("delivered", decision) == decision
        rule = transition(decision)
        assert rule is not None and rule.closes
    # A closed message never moves again, whatever arrives.
    for closed in CLOSED:
        for status in ("delivered", "acknowledged", "rejected", "expired", "escalated"):
            assert state_after(closed, status) == closed
    rule = transition("delivered")
    assert rule is not None and not rule.closes
    assert transition("escalated") is None
    assert transition("accepted") is None
    assert set(STATES) == {"accepted", "delivered", *CLOSED}


@pytest.mark.parametrize(
    ("statuses", "state"),
    [
        ([], "sent"),
        (["accepted"], "accepted"),
        (["accepted", "delivered"], "delivered"),
        (["accepted", "delivered", "escalated", "acknowledged"], "acknowledged"),
        (["accepted", "acknowledged", "delivered"], "acknowledged"),
        (["delivered"], "delivered"),  # the accepted receipt not known locally yet
        (["accepted", "expired", "acknowledged"], "expired"),
    ],
)
def test_state_from_receipts(statuses: list[str], state: str) -> None:
    assert state_from_receipts(statuses) == state


@pytest.mark.parametrize(
    ("statuses", "state"),
    [
        ([], "queued"),
        (["accepted"], "accepted"),
        (["delivered"], "delivered"),
        (["accepted", "delivered", "acknowledged"], "acknowledged"),
    ],
)
def test_state_from_receipts_of_a_message_queued_in_the_outbox(
    statuses: list[str], state: str
) -> None:
    """The sender's outbox starts from ``queued``; the relay's transitions are the same."""
    assert state_from_receipts(statuses, initial="queued") == state


def test_ack_by_only_tightens_the_schedule() -> None:
    offsets = [(1, 10 * MIN), (2, 30 * MIN), (3, 120 * MIN)]
    plain = schedule(offsets, priority="urgent", accepted_at=T0, ack_by=None, working_hours=False)
    assert plain.steps == ((1, T0 + 10 * MIN), (2, T0 + 30 * MIN), (3, T0 + 120 * MIN))
    late = schedule(
        offsets, priority="urgent", accepted_at=T0, ack_by=T0 + 60 * MIN, working_hours=False
    )
    assert late.steps == plain.steps
    early = schedule(
        offsets, priority="urgent", accepted_at=T0, ack_by=T0 + 4 * MIN, working_hours=False
    )
    assert early.steps == ((1, T0 + 4 * MIN), (2, T0 + 24 * MIN), (3, T0 + 114 * MIN))
    assert type(plain).loads(plain.dumps()) == plain
    assert type(plain).loads("not json") is None


def _entry(aid: str, **chain: object) -> DirectoryEntry:
    return DirectoryEntry.model_construct(
        id=aid, escalation=EscalationChain.model_construct(**chain), hours=None
    )


DIRECTORY = {
    "fr-oclcc": _entry(
        "fr-oclcc", deputies=["fr-deputy"], duty_desk="fr-desk", supervisor="fr-ministry"
    ),
    "fr-deputy": _entry("fr-deputy", deputies=[], duty_desk=None, supervisor=None),
    "fr-desk": _entry("fr-desk", deputies=[], duty_desk=None, supervisor=None),
    "fr-ministry": _entry("fr-ministry", deputies=[], duty_desk=None, supervisor=None),
    "it-tpc": _entry("it-tpc", deputies=[], duty_desk=None, supervisor=None),
}


def _facts(fallbacks: tuple[str, ...] = ()) -> MessageFacts:
    offsets = [(1, 10 * MIN), (2, 30 * MIN), (3, 120 * MIN)]
    snap = schedule(offsets, priority="urgent", accepted_at=T0, ack_by=None, working_hours=False)
    return MessageFacts("m1", "it-tpc", ("fr-oclcc",), fallbacks, snap.dumps())


def test_each_step_yields_explicit_effects() -> None:
    remind = plan_step(Step.REMIND, _facts(), DIRECTORY.get, T0 + 10 * MIN)
    assert remind.notify == (Notify("fr-oclcc", "envelope", True, remind.notify[0].note),)
    assert remind.statement is not None and remind.statement.step == Step.REMIND
    assert remind.record_step and not remind.close and remind.set_state is None
    assert remind.next_timer == (Step.RELEASE, T0 + 30 * MIN)
    assert not remind.alert_operators

    release = plan_step(Step.RELEASE, _facts(("fr-desk",)), DIRECTORY.get, T0 + 30 * MIN)
    assert release.release == ("fr-desk",)
    # The duty desk got the envelope as fallback, so only the deputy gets a notice.
    assert [(n.recipient, n.kind) for n in release.notify] == [
        ("fr-desk", "envelope"),
        ("fr-deputy", "escalation"),
    ]
    assert release.next_timer == (Step.NOTIFY, T0 + 120 * MIN)

    notify = plan_step(Step.NOTIFY, _facts(), DIRECTORY.get, T0 + 120 * MIN)
    assert [(n.recipient, n.kind) for n in notify.notify] == [("fr-ministry", "escalation")]
    assert notify.alert_operators and notify.next_timer is None

    expire = plan_step(Step.EXPIRE, _facts(), DIRECTORY.get, T0 + 999 * MIN)
    assert expire.set_state == "expired" and expire.close and expire.withdraw_queued
    assert expire.statement == Statement("expired", "expired before any recipient acknowledged")
    assert not expire.record_step


def test_a_message_without_a_policy_and_an_unknown_step_do_nothing() -> None:
    bare = MessageFacts("m1", "it-tpc", ("fr-oclcc",), (), "{}")
    effects = plan_step(Step.REMIND, bare, DIRECTORY.get, T0)
    assert effects.notify == () and effects.statement is None and effects.next_timer is None
    unknown = plan_step(7, _facts(), DIRECTORY.get, T0)
    assert unknown.statement is None and unknown.next_timer is None and not unknown.close


def test_reasons_name_the_policy_step_with_seconds_not_a_missed_deadline() -> None:
    remind = plan_step(Step.REMIND, _facts(), DIRECTORY.get, T0 + 10 * MIN)
    assert remind.statement is not None
    due = "2026-05-28 20:36:40 UTC"  # T0 + 10 min
    assert remind.statement.reason == (
        f"policy step 1 (remind), due {due}: not acknowledged yet; reminded fr-oclcc"
    )
    assert remind.notify[0].note == (
        f"reminder: not acknowledged yet (policy step 1 (remind), due {due})"
    )
    release = plan_step(Step.RELEASE, _facts(("fr-desk",)), DIRECTORY.get, T0 + 30 * MIN)
    assert release.statement is not None
    assert release.statement.reason.startswith(
        "policy step 2 (release), due 2026-05-28 20:56:40 UTC: "
        "fr-oclcc has not acknowledged; released to fr-desk; notified fr-deputy"
    )
