"""The relay's statements made in the same turn of the event loop are signed as one batch.

Concurrent submissions (HTTP requests and WebSocket ``submit`` frames arriving
together) each need ``accepted`` receipts; :class:`BatchSigner` collects the statements
asked for until the loop's next turn and signs them all with one Ed25519 signature
(:func:`keys.receipts.sign_receipts`), so under load the relay makes one signature per
group of submissions, not one per message. At low load a caller waits one loop turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from keys.identity import Identity
from keys.receipts import MAX_BATCH, sign_receipts

__all__ = ["BatchSigner"]

_Waiting = tuple[list[dict[str, object]], asyncio.Future[list[str]]]


class BatchSigner:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._waiting: list[_Waiting] = []
        self._scheduled = False
        self.signatures = 0
        """Batch signatures made (tests and benchmarks: statements per signature)."""

    async def sign(self, bodies: Sequence[dict[str, object]], *, now: int) -> list[str]:
        """The tokens of ``bodies`` (receipt statements by this relay), in order."""
        if not bodies:
            return []
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[str]] = loop.create_future()
        self._waiting.append((list(bodies), fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, now)
        return await fut

    def _flush(self, now: int) -> None:
        waiting, self._waiting = self._waiting, []
        self._scheduled = False
        bodies = [b for part, _ in waiting for b in part]
        try:
            tokens: list[str] = []
            for start in range(0, len(bodies), MAX_BATCH):
                tokens += sign_receipts(self.identity, bodies[start : start + MAX_BATCH], now=now)
                self.signatures += 1
        except Exception as exc:  # a key problem: every caller hears of it
            for _, fut in waiting:
                if not fut.done():
                    fut.set_exception(exc)
            return
        at = 0
        for part, fut in waiting:
            if not fut.done():
                fut.set_result(tokens[at : at + len(part)])
            at += len(part)
