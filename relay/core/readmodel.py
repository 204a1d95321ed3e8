"""The operators' read model: delivery metadata for ``/ops``, ``/metrics`` and
``relay status``, typed, with store failures translated (never content).

It reads the hub (who is connected), the prober (who answered), the recent-message index
and the store; it writes nothing. :mod:`relay.status` builds the operator snapshot from
it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from keys.directory import Directory
from relay.core.delivery import Clock, Hub
from relay.core.errors import guard
from relay.core.intake import MessageIndex
from relay.core.probes import Prober
from relay.store.base import MessageRecord, QueueStats, ReceiptRecord, Store

DIRECTORY_WARN_MS = 14 * 86_400_000
"""A directory version this close to its expiry makes health degraded (and is logged)."""


@dataclass(frozen=True, slots=True)
class Presence:
    connected: dict[str, int]
    """authority -> open connections."""
    last_seen: dict[str, int]
    """authority -> when last connected (ms); ``now`` while connected."""


@dataclass(frozen=True, slots=True)
class ProbeState:
    answered_at: int | None
    rtt_ms: int | None
    reachable: bool


@dataclass(frozen=True, slots=True)
class Reachability:
    reachable: bool
    """A daemon answered a probe lately, has just connected, or polled lately."""
    since: int | None
    """When it was last known to be reachable (ms; the relay's start if never)."""


@dataclass(frozen=True, slots=True)
class RecentMessage:
    id: str
    sender: str
    recipients: tuple[str, ...]
    """``to`` and fallbacks, sorted."""
    accepted_at: int


@dataclass(frozen=True, slots=True)
class TimerStats:
    pending: int
    overdue: int
    next_due: int | None


class ReadModel:
    def __init__(
        self,
        *,
        store: Store,
        hub: Hub,
        prober: Prober,
        index: MessageIndex,
        relay_id: str,
        directory: Callable[[], Directory],
        clock: Clock,
        unreachable_after_ms: int = 600_000,
    ) -> None:
        self.unreachable_after_ms = unreachable_after_ms
        """Unreachable for longer than this is a problem an operator must see."""
        self._store = store
        self._hub = hub
        self._prober = prober
        self._index = index
        self.relay_id = relay_id
        self._directory = directory
        self.clock = clock
        self.started_at = clock()

    @property
    def directory(self) -> Directory:
        return self._directory()

    def presence(self, now: int) -> Presence:
        connected = self._hub.connections()
        return Presence(connected, {**self._hub.last_seen, **dict.fromkeys(connected, now)})

    def connections(self) -> int:
        return self._hub.count()

    def recent(self, limit: int = 256) -> list[RecentMessage]:
        """Up to ``limit`` of the latest accepted messages, newest first."""
        return [
            RecentMessage(msg_id, m.sender, tuple(sorted(m.recipients)), m.accepted_at)
            for msg_id, m in self._index.recent(limit)
        ]

    def probe(self, authority: str, now: int) -> ProbeState:
        return ProbeState(
            self._prober.answers.get(authority),
            self._prober.rtt_ms.get(authority),
            self._prober.reachable(authority, now),
        )

    def reachability(self, authority: str, now: int) -> Reachability:
        """Whether a person at ``authority`` can be reached through its daemon now.

        Reachable: its daemon answered a probe within the probe window, or connected (or
        polled) within that window and has not had a probe yet. Otherwise unreachable
        since the latest sign of life (an answer, a connection, a disconnection), or
        since this relay started when there was none.
        """
        window = self._prober.window_ms
        answered = self._prober.answers.get(authority)
        connected = self._hub.connected_since(authority)
        seen = self._hub.last_seen.get(authority)
        if answered is not None and now - answered <= window:
            return Reachability(True, None)
        if connected is not None and now - connected <= window:
            return Reachability(True, None)
        if connected is None and seen is not None and now - seen <= window:
            return Reachability(True, None)  # a long-poll client between two polls
        signs = [t for t in (answered, connected, seen) if t is not None]
        return Reachability(False, max(signs, default=self.started_at))

    async def queue_stats(self) -> list[QueueStats]:
        return await guard(self._store.queue_stats())

    async def timer_stats(self, now: int, *, overdue_after_ms: int) -> TimerStats:
        pending, overdue, next_due = await guard(
            self._store.timer_stats(now, overdue_after_ms=overdue_after_ms)
        )
        return TimerStats(pending, overdue, next_due)

    async def open_escalations(self, *, limit: int) -> list[MessageRecord]:
        return await guard(self._store.open_escalations(limit=limit))

    async def message(self, msg_id: str) -> MessageRecord | None:
        return await guard(self._store.get_message(msg_id))

    async def receipts(self, msg_id: str) -> list[ReceiptRecord]:
        return await guard(self._store.receipts(msg_id))
