"""The relay's log as its clients see it: signed tree heads, and proofs over it.

The store appends one leaf per stored receipt in the commit that stores it
(:meth:`relay.store.base.Store.log_head`). This collaborator signs heads and builds
RFC 9162 proofs from the stored perfect subtrees (:mod:`keys.merkle`). A head is signed
once per log size: each commit batch that appended leaves gets one signature, made
when the first client asks for the newest head after it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence

from keys.identity import Identity
from keys.loghead import sign_log_head
from keys.merkle import EMPTY_ROOT, Perfect, consistency_proof, inclusion_proof, subtree_root
from relay.core.delivery import Clock
from relay.core.errors import MalformedError, NotFoundError, guard
from relay.store.base import LogHead, Store

__all__ = ["LogEntry", "TransparencyLog"]

OLDER_HEADS = 256
LogEntry = tuple[int, str, list[bytes]]
"""(leaf index, receipt token, inclusion path)."""


async def _proof(store: Store, build: Callable[[Perfect], list[bytes]]) -> list[bytes]:
    """Run ``build`` twice: once to learn which stored subtrees it reads (which depends
    only on the sizes), then over those subtrees fetched in one store call."""
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return EMPTY_ROOT

    build(record)
    nodes = await guard(store.log_nodes(sorted(wanted)))
    if len(nodes) < len(wanted):
        raise NotFoundError("that part of the log is not stored here", code="unknown_log_size")
    return build(lambda level, index: nodes[(level, index)])


class TransparencyLog:
    def __init__(self, *, store: Store, identity: Identity, clock: Clock) -> None:
        self.store = store
        self.identity = identity
        self.clock = clock
        self._signed: tuple[LogHead, str] | None = None
        self._older: OrderedDict[int, tuple[LogHead, str]] = OrderedDict()
        """Heads signed for older sizes (proofs against a head a client holds): one each."""
        self._lock = asyncio.Lock()

    async def head(self) -> tuple[LogHead, str]:
        """The newest head and its signature (compact JWS), signed once per size."""
        async with self._lock:
            head = await guard(self.store.log_head())
            if self._signed is None or self._signed[0] != head:
                token = sign_log_head(
                    self.identity, size=head.size, root=head.root, now=self.clock()
                )
                self._signed = (head, token)
            return self._signed

    async def consistency(self, first: int, second: int) -> list[bytes]:
        head, _ = await self.head()
        if first > second or second > head.size:
            raise MalformedError(
                f"no consistency proof from size {first} to {second}: the log has "
                f"{head.size} leaves (need first <= second <= size)",
                code="bad_log_size",
            )
        return await _proof(self.store, lambda p: consistency_proof(first, second, p))

    async def message(
        self, authority: str, msg_id: str, size: int | None = None
    ) -> tuple[str, list[LogEntry]]:
        """The log entries of one message's receipts, for its sender or a recipient
        (anyone else is told no more than for a message that does not exist)."""
        record = await guard(self.store.get_message(msg_id))
        if record is None or authority not in (record.sender, *record.to, *record.fallbacks):
            raise NotFoundError(f"no message {msg_id} of yours", code="unknown_message")
        receipts = await guard(self.store.receipts(msg_id))
        leaves = [(record.log_index, record.accepted_receipt)]
        leaves += [(r.log_index, r.token) for r in receipts]
        return await self.entries(leaves, size)

    async def entries(
        self, leaves: Sequence[tuple[int | None, str]], size: int | None = None
    ) -> tuple[str, list[LogEntry]]:
        """Inclusion proofs of ``leaves`` ((index, token); index None: stored before the
        log existed, left out) against the newest head, or against ``size``."""
        head, token = await self.head()
        if size is not None and size != head.size:
            if size > head.size:
                raise MalformedError(
                    f"the log has {head.size} leaves, not {size}", code="bad_log_size"
                )
            cached = self._older.get(size)
            if cached is None:
                root = await _root(self.store, size)
                token = sign_log_head(self.identity, size=size, root=root, now=self.clock())
                cached = self._older[size] = (LogHead(size, root), token)
                while len(self._older) > OLDER_HEADS:
                    self._older.popitem(last=False)
            head, token = cached
        out: list[LogEntry] = []
        for index, receipt in leaves:
            if index is None or index >= head.size:
                continue
            path = await _proof(self.store, _inclusion(index, head.size))
            out.append((index, receipt, path))
        return token, out


def _inclusion(index: int, size: int) -> Callable[[Perfect], list[bytes]]:
    return lambda perfect: inclusion_proof(index, size, perfect)


async def _root(store: Store, size: int) -> bytes:
    (root,) = await _proof(store, lambda p: [subtree_root(0, size, p)])
    return root
