"""Escalation policies: per priority, validated at start, snapshotted into each message.

A policy gives the delay after acceptance of each step: remind the recipients, release
the message to the fallback recipients (and notify deputies and the duty desk), notify
the supervising authority and the operators. At accept time the delays become absolute
due times stored with the message, so a later configuration change never alters a
message in flight. A sender's ``ack_by`` can only bring the steps earlier.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from relay.store.base import STEP_NOTIFY, STEP_RELEASE, STEP_REMIND

_DURATION = re.compile(r"^(\d+)\s*(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(text: str) -> int:
    """'90s', '10m', '2h', '3d' -> milliseconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 90s, 10m, 2h or 3d")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    remind_after: str
    release_after: str
    notify_after: str
    working_hours: bool = False
    """Defer reminders and notifications to the recipient's working hours (directory)."""

    @field_validator("remind_after", "release_after", "notify_after")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be longer than zero")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> PolicyConfig:
        remind, release, notify = (
            parse_duration(x) for x in (self.remind_after, self.release_after, self.notify_after)
        )
        if not remind < release < notify:
            raise ValueError(
                "steps must come in order: remind_after < release_after < notify_after"
            )
        return self

    def offsets(self) -> list[tuple[int, int]]:
        return [
            (STEP_REMIND, parse_duration(self.remind_after)),
            (STEP_RELEASE, parse_duration(self.release_after)),
            (STEP_NOTIFY, parse_duration(self.notify_after)),
        ]


DEFAULT_POLICIES: dict[str, PolicyConfig] = {
    "urgent": PolicyConfig(remind_after="10m", release_after="30m", notify_after="2h"),
    "high": PolicyConfig(remind_after="2h", release_after="8h", notify_after="1d"),
    "routine": PolicyConfig(
        remind_after="2d", release_after="5d", notify_after="10d", working_hours=True
    ),
}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The schedule fixed for one message at accept time."""

    priority: str
    steps: tuple[tuple[int, int], ...]
    working_hours: bool

    def due(self, step: int) -> int | None:
        return next((d for s, d in self.steps if s == step), None)

    def next_after(self, step: int) -> tuple[int, int] | None:
        return next(((s, d) for s, d in self.steps if s > step), None)

    def dumps(self) -> str:
        return json.dumps(
            {
                "priority": self.priority,
                "steps": [list(s) for s in self.steps],
                "working_hours": self.working_hours,
            }
        )

    @classmethod
    def loads(cls, text: str) -> Snapshot | None:
        try:
            raw: dict[str, Any] = json.loads(text)
            steps = tuple((int(s), int(d)) for s, d in raw["steps"])
            return cls(str(raw["priority"]), steps, bool(raw.get("working_hours", False)))
        except (ValueError, KeyError, TypeError):
            return None


def snapshot(
    policy: PolicyConfig, *, priority: str, accepted_at: int, ack_by: int | None
) -> Snapshot:
    """Absolute due times; ``ack_by`` earlier than the first step pulls every step earlier."""
    steps = [(step, accepted_at + offset) for step, offset in policy.offsets()]
    first_due = steps[0][1]
    if ack_by is not None and ack_by < first_due:
        shift = first_due - max(ack_by, accepted_at)
        steps = [(step, due - shift) for step, due in steps]
    return Snapshot(priority, tuple(steps), policy.working_hours)
