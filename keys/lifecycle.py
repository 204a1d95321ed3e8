"""The message lifecycle: states, transitions, escalation steps and what each step does.

This module is the one place where these rules are written. It is pure: no I/O, no
clock (``now`` is a parameter), no signing. The relay plans escalation steps with
:func:`plan_step` and hands the resulting :class:`StepEffects` to its store, which only
checks the timer's fencing generation and applies them; the stores move a message's
state on a receipt with :func:`transition` (the Redis store passes the same transition
to its Lua scripts as arguments); the sender's CLI derives the state of a sent message
from its receipts with :func:`state_from_receipts`.

States::

    accepted --delivered--> delivered
    accepted | delivered --acknowledged | rejected | expired--> (closed)

A closing transition bumps the message's fencing generation and drops its timers, so a
timer that fires late or concurrently finds nothing to do.

Escalation steps (each with a relay-signed ``escalated`` statement for the sender):

1. **remind**: push the message again to its recipients, flagged as a reminder;
2. **release**: deliver it to the fallback recipients (whose wrapped keys it already
   carries) and notify each recipient's deputies and duty desk;
3. **notify**: notify each recipient's supervising authority, and the operators;

and **expire**: close the message with a relay-signed ``expired`` statement and
withdraw its copies still queued.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, Literal

import pydantic_core

from keys.models import DirectoryEntry

__all__ = [
    "CLOSED",
    "OPEN",
    "STATES",
    "STEP_NAMES",
    "MessageFacts",
    "Notify",
    "Schedule",
    "State",
    "Statement",
    "Step",
    "StepEffects",
    "Transition",
    "plan_step",
    "schedule",
    "state_after",
    "state_from_receipts",
    "transition",
]

State = Literal["accepted", "delivered", "acknowledged", "rejected", "expired"]
STATES: tuple[State, ...] = ("accepted", "delivered", "acknowledged", "rejected", "expired")
OPEN: frozenset[str] = frozenset({"accepted", "delivered"})
CLOSED: frozenset[str] = frozenset({"acknowledged", "rejected", "expired"})


class Step(IntEnum):
    REMIND = 1
    RELEASE = 2
    NOTIFY = 3
    EXPIRE = 9


STEP_NAMES: dict[int, str] = {
    Step.REMIND: "remind",
    Step.RELEASE: "release",
    Step.NOTIFY: "notify",
    Step.EXPIRE: "expire",
}
ESCALATION_STEPS = (Step.REMIND, Step.RELEASE, Step.NOTIFY)


# -- transitions on receipts ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    """A receipt status moves a message from any of ``before`` to ``after``."""

    before: frozenset[str]
    after: State
    closes: bool
    """Bump the fencing generation and drop the timers (escalation stops)."""


_TRANSITIONS: dict[str, Transition] = {
    "delivered": Transition(frozenset({"accepted"}), "delivered", False),
    "acknowledged": Transition(OPEN, "acknowledged", True),
    "rejected": Transition(OPEN, "rejected", True),
    "expired": Transition(OPEN, "expired", True),
}


def transition(status: str) -> Transition | None:
    """The state change a receipt of ``status`` makes (None: it changes nothing)."""
    return _TRANSITIONS.get(status)


def state_after(state: str, status: str) -> str:
    """The state of a message in ``state`` once a receipt of ``status`` is added."""
    rule = _TRANSITIONS.get(status)
    if rule is not None and state in rule.before:
        return rule.after
    return state


def state_from_receipts(statuses: Iterable[str], *, initial: str = "sent") -> str:
    """The state of a sent message from its receipts in the order received.

    ``initial`` before the relay's ``accepted`` receipt is known: ``sent`` (submitted
    without an answer) or, for the sender's outbox, ``queued`` (waiting for the relay);
    then the same transitions as the relay applies.
    """
    seen = list(statuses)
    state = "accepted" if "accepted" in seen else initial
    for status in seen:
        rule = _TRANSITIONS.get(status)
        if rule is not None and (state in rule.before or state == initial):
            state = rule.after
    return state


# -- the schedule fixed at accept time -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Schedule:
    """The escalation steps of one message with their absolute due times (ms)."""

    priority: str
    steps: tuple[tuple[int, int], ...]
    working_hours: bool

    def due(self, step: int) -> int | None:
        return next((d for s, d in self.steps if s == step), None)

    def next_after(self, step: int) -> tuple[int, int] | None:
        return next(((s, d) for s, d in self.steps if s > step), None)

    def dumps(self) -> str:
        """JSON (pydantic-core's serialiser: once per accepted message)."""
        return pydantic_core.to_json(
            {"priority": self.priority, "steps": self.steps, "working_hours": self.working_hours}
        ).decode()

    @classmethod
    def loads(cls, text: str) -> Schedule | None:
        try:
            raw: dict[str, Any] = json.loads(text)
            steps = tuple((int(s), int(d)) for s, d in raw["steps"])
            return cls(str(raw["priority"]), steps, bool(raw.get("working_hours", False)))
        except (ValueError, KeyError, TypeError):
            return None


def schedule(
    offsets: Sequence[tuple[int, int]],
    *,
    priority: str,
    accepted_at: int,
    ack_by: int | None,
    working_hours: bool,
) -> Schedule:
    """Absolute due times from (step, delay) offsets; an ``ack_by`` earlier than the
    first step pulls every step earlier (it can only tighten the policy)."""
    steps = [(step, accepted_at + offset) for step, offset in offsets]
    first_due = steps[0][1]
    if ack_by is not None and ack_by < first_due:
        shift = first_due - max(ack_by, accepted_at)
        steps = [(step, due - shift) for step, due in steps]
    return Schedule(priority, tuple(steps), working_hours)


# -- escalation effects --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What planning a step needs to know about a message (metadata only)."""

    id: str
    sender: str
    to: tuple[str, ...]
    fallbacks: tuple[str, ...]
    policy: str
    """The :class:`Schedule` snapshot, as stored (JSON)."""


@dataclass(frozen=True, slots=True)
class Notify:
    """Queue something for ``recipient``: the message's envelope (a reminder or a
    release) or the step's signed statement (an escalation notice)."""

    recipient: str
    kind: Literal["envelope", "escalation"]
    reminder: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True)
class Statement:
    """A relay-signed receipt the step emits to the sender's timeline."""

    status: Literal["escalated", "expired"]
    reason: str
    step: int = 0


@dataclass(frozen=True, slots=True)
class StepEffects:
    """Everything firing one timer does; applied atomically, under the timer's
    generation, or not at all."""

    step: int
    notify: tuple[Notify, ...] = ()
    statement: Statement | None = None
    set_state: State | None = None
    close: bool = False
    """Bump the generation and drop every timer of the message."""
    record_step: bool = False
    """Record ``step`` as the message's escalation step (it is escalating)."""
    release: tuple[str, ...] = ()
    """Fallback recipients the message is released to."""
    withdraw_queued: bool = False
    """Remove the copies of the envelope still queued."""
    next_timer: tuple[int, int] | None = None
    deferred: bool = False
    """Not a step: the timer only moves to ``next_timer`` (outside working hours)."""
    alert_operators: bool = False
    """Tell the operators (a WARNING and a counter), once the effects are committed."""


Lookup = Callable[[str], DirectoryEntry | None]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _step(step: int, snap: Schedule, now: int) -> str:
    """The policy step as what it is, not as a missed deadline: "policy step 1 (remind),
    due 2026-12-01 08:02:00 UTC"."""
    return f"policy step {step} ({STEP_NAMES[step]}), due {_when(snap.due(step) or now)}"


def _notice(msg: MessageFacts, reason: str) -> str:
    """The note of an escalation notice: it names the sender, which the signed statement
    does not (the deputy does not hold the message)."""
    return f"escalation: message from {msg.sender}: {reason}"


def plan_step(step: int, msg: MessageFacts, directory: Lookup, now: int) -> StepEffects:
    """What firing ``step`` of ``msg`` does at ``now``, given the current directory."""
    if step == Step.EXPIRE:
        return StepEffects(
            step=step,
            statement=Statement("expired", "expired before any recipient acknowledged"),
            set_state="expired",
            close=True,
            withdraw_queued=True,
        )
    snap = Schedule.loads(msg.policy)
    if snap is None:  # accepted without a policy: nothing to escalate
        return StepEffects(step=step)
    if snap.working_hours and step in (Step.REMIND, Step.NOTIFY):
        opens = [
            entry.hours.next_open(now)
            for aid in msg.to
            if (entry := directory(aid)) is not None and entry.hours is not None
        ]
        if opens and min(opens) > now:
            # Nobody is at their desk: try again when the first office opens.
            return StepEffects(step=step, next_timer=(step, min(opens)), deferred=True)
    nxt = snap.next_after(step)
    to = ", ".join(msg.to)
    if step not in (Step.REMIND, Step.RELEASE, Step.NOTIFY):
        return StepEffects(step=step)  # an unknown step (a newer relay's timer): drop it
    which = _step(step, snap, now)
    if step == Step.REMIND:
        note = f"reminder: not acknowledged yet ({which})"
        return StepEffects(
            step=step,
            notify=tuple(Notify(r, "envelope", True, note) for r in msg.to),
            statement=Statement("escalated", f"{which}: not acknowledged yet; reminded {to}", step),
            record_step=True,
            next_timer=nxt,
        )
    if step == Step.RELEASE:
        chain: list[str] = []
        for aid in msg.to:
            entry = directory(aid)
            if entry is not None:
                chain += entry.escalation.deputies
                if entry.escalation.duty_desk:
                    chain.append(entry.escalation.duty_desk)
        released = tuple(f for f in msg.fallbacks if directory(f) is not None)
        deputies = [a for a in dict.fromkeys(chain) if a not in released and a != msg.sender]
        parts = []
        if released:
            parts.append(f"released to {', '.join(released)}")
        if deputies:
            parts.append(f"notified {', '.join(deputies)}")
        reason = f"{which}: {to} has not acknowledged; " + (
            "; ".join(parts) or "no fallback or deputy named"
        )
        note = f"released to you: {to} has not acknowledged ({which})"
        return StepEffects(
            step=step,
            notify=(
                *(Notify(f, "envelope", False, note) for f in released),
                *(Notify(a, "escalation", False, _notice(msg, reason)) for a in deputies),
            ),
            statement=Statement("escalated", reason, step),
            record_step=True,
            release=released,
            next_timer=nxt,
        )
    if step == Step.NOTIFY:
        chain = [
            entry.escalation.supervisor
            for aid in msg.to
            if (entry := directory(aid)) is not None and entry.escalation.supervisor
        ]
        supervisors = [s for s in dict.fromkeys(chain) if s != msg.sender]
        reason = (
            f"{which}: {to} has not acknowledged; notified "
            + (f"supervising authority {', '.join(supervisors)} and " if supervisors else "")
            + "the operators"
        )
        return StepEffects(
            step=step,
            notify=tuple(Notify(s, "escalation", False, _notice(msg, reason)) for s in supervisors),
            statement=Statement("escalated", reason, step),
            record_step=True,
            next_timer=nxt,
            alert_operators=True,
        )
    raise AssertionError(step)  # unreachable: every known step returned above
