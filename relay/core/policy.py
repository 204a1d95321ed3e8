"""Escalation policies: per priority, validated at start, snapshotted into each message.

A policy gives the delay after acceptance of each step: remind the recipients, release
the message to the fallback recipients (and notify deputies and the duty desk), notify
the supervising authority and the operators. At accept time the delays become absolute
due times stored with the message, so a later configuration change never alters a
message in flight. A sender's ``ack_by`` can only bring the steps earlier.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from keys.lifecycle import Schedule, Step, schedule

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
            (Step.REMIND, parse_duration(self.remind_after)),
            (Step.RELEASE, parse_duration(self.release_after)),
            (Step.NOTIFY, parse_duration(self.notify_after)),
        ]


DEFAULT_POLICIES: dict[str, PolicyConfig] = {
    "urgent": PolicyConfig(remind_after="10m", release_after="30m", notify_after="2h"),
    "high": PolicyConfig(remind_after="2h", release_after="8h", notify_after="1d"),
    "routine": PolicyConfig(
        remind_after="2d", release_after="5d", notify_after="10d", working_hours=True
    ),
}


Snapshot = Schedule
"""The schedule fixed for one message at accept time (:class:`keys.lifecycle.Schedule`)."""


def snapshot(
    policy: PolicyConfig, *, priority: str, accepted_at: int, ack_by: int | None
) -> Schedule:
    """Absolute due times; ``ack_by`` earlier than the first step pulls every step earlier."""
    return schedule(
        policy.offsets(),
        priority=priority,
        accepted_at=accepted_at,
        ack_by=ack_by,
        working_hours=policy.working_hours,
    )
