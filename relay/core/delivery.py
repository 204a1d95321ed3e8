"""Delivery: who is connected, and getting queued items to them.

:class:`Hub` knows the connected sessions (WebSockets and long-poll waiters) and hands
items committed by this process (or, on a shared store, by another instance) to them in
memory. :class:`Delivery` runs each session's pump, takes acknowledgements and serves
long-poll. Nothing leaves a queue until the daemon acknowledges its ``seq``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from keys.wire import Probe
from relay.core.errors import MalformedError, guard
from relay.store.base import QueueItem, Store

Clock = Callable[[], int]
BUFFER_LIMIT = 10_000


@dataclass(eq=False)
class Session:
    """One connected daemon (a WebSocket, or a long-poll waiter)."""

    authority: str
    send: Callable[[list[QueueItem]], Awaitable[None]] | None = None
    control: Callable[[Probe], Awaitable[None]] | None = None
    """Sends a control frame (a probe) on a live connection."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: set[int] = field(default_factory=set)
    connected_at: int = 0
    buffer: deque[QueueItem] = field(default_factory=deque)
    """Items committed since the session caught up, handed over without a store read."""
    covered: int = 0
    """Every pending item with seq <= covered was returned by a store read."""
    caught_up: bool = False
    """False until a store read returned less than a full page (then the buffer is complete)."""
    resyncs: int = 0
    """Bumped whenever the buffer may have missed items; a store read in flight then
    does not count as catching up."""

    def resync(self) -> None:
        self.buffer.clear()
        self.caught_up = False
        self.resyncs += 1
        self.wake.set()

    def offer(self, item: QueueItem) -> None:
        if len(self.buffer) >= BUFFER_LIMIT:
            # A slow consumer: drop the copy in memory and read from the store again.
            self.resync()
        else:
            self.buffer.append(item)
        self.wake.set()


class Hub:
    """Who is connected, and waking their delivery loops when something is queued."""

    def __init__(self) -> None:
        self.sessions: dict[str, set[Session]] = {}
        self.last_seen: dict[str, int] = {}

    def attach(self, session: Session) -> None:
        self.sessions.setdefault(session.authority, set()).add(session)

    def detach(self, session: Session, now: int) -> None:
        group = self.sessions.get(session.authority)
        if group is not None:
            group.discard(session)
            if not group:
                del self.sessions[session.authority]
        self.last_seen[session.authority] = now

    def notify(self, authorities: Sequence[str]) -> None:
        for aid in authorities:
            for session in self.sessions.get(aid, ()):
                session.wake.set()

    def publish(self, items: Sequence[QueueItem]) -> None:
        """Hand committed items to the connected sessions of their recipients."""
        for item in items:
            for session in self.sessions.get(item.recipient, ()):
                session.offer(item)

    def connected(self, authority: str) -> bool:
        return bool(self.sessions.get(authority))

    def count(self) -> int:
        return sum(len(s) for s in self.sessions.values())

    def connected_since(self, authority: str) -> int | None:
        """When the oldest open connection of ``authority`` was made (ms), if any."""
        return min((s.connected_at for s in self.sessions.get(authority, ())), default=None)

    def connections(self) -> dict[str, int]:
        """authority -> open connections (WebSockets and long-poll waiters)."""
        return {aid: len(group) for aid, group in self.sessions.items() if group}

    def live(self) -> list[Session]:
        """Every session, for a probe round or a resync."""
        return [s for group in self.sessions.values() for s in group]

    def resync_all(self) -> None:
        """Pushes may have been missed: every session re-reads its queue from the store."""
        for session in self.live():
            session.resync()


class Delivery:
    """Pumps, acknowledgements and long-poll over one store and one hub."""

    def __init__(self, *, store: Store, hub: Hub, clock: Clock, window: int = 1000) -> None:
        self.store = store
        self.hub = hub
        self.clock = clock
        self.window = window

    def publish(self, items: Sequence[QueueItem]) -> None:
        """Hand items just committed to the sessions of their recipients."""
        self.hub.publish(items)

    async def pump(self, session: Session) -> None:
        """Push queued items to one session until cancelled, within the in-flight window.

        Until it has caught up, the session reads its backlog from the store; after
        that, items committed for it arrive in ``session.buffer`` (published right after
        the commit) and go out without touching the store again.
        """
        assert session.send is not None
        window = self.window
        while True:
            session.wake.clear()
            room = window - len(session.inflight)
            if room <= 0:
                await session.wake.wait()
                continue
            batch: list[QueueItem] = []
            if not session.caught_up:
                page = min(room, 500)
                resyncs = session.resyncs
                items = await guard(
                    self.store.pending(session.authority, after=session.covered, limit=page)
                )
                if items:
                    session.covered = items[-1].seq
                if len(items) < page and session.resyncs == resyncs:
                    session.caught_up = True
                batch = [i for i in items if i.seq not in session.inflight]
            while session.buffer and len(batch) < room:
                item = session.buffer.popleft()
                if item.seq > session.covered and item.seq not in session.inflight:
                    batch.append(item)
            if batch:
                session.inflight.update(i.seq for i in batch)
                await session.send(batch)
                continue
            if session.caught_up and not session.buffer:
                await session.wake.wait()

    async def ack(self, session: Session | None, authority: str, seqs: Sequence[int]) -> int:
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seqs):
            raise MalformedError("seqs must be a list of integers")
        removed = await guard(self.store.ack(authority, seqs))
        # Free the delivery window of every connection of this authority, whichever
        # transport the acknowledgement came by; otherwise a connection whose items were
        # acknowledged elsewhere would stall once its window is full.
        for other in self.hub.sessions.get(authority, ()):
            other.inflight.difference_update(seqs)
            other.wake.set()
        if session is not None:
            session.inflight.difference_update(seqs)
            session.wake.set()
        return removed

    async def queued(self, authority: str) -> int:
        """How many items are waiting for ``authority`` (the WebSocket hello's ``pending``)."""
        return await guard(self.store.depth(authority))

    async def poll(
        self, authority: str, *, after: int, wait_s: float, limit: int
    ) -> list[QueueItem]:
        """Long-poll: items after ``after``, waiting up to ``wait_s`` for the first one."""
        # Attach before the first read, so an item committed during it still wakes us.
        waiter = Session(authority=authority, connected_at=self.clock())
        self.hub.attach(waiter)
        try:
            items = await guard(self.store.pending(authority, after=after, limit=limit))
            if items or wait_s <= 0:
                return items
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wake.wait(), timeout=wait_s)
            return await guard(self.store.pending(authority, after=after, limit=limit))
        finally:
            self.hub.detach(waiter, self.clock())
