"""Synthetic end-to-end probes: "reachable" means a daemon answered, not a socket is open.

Every ``interval`` the relay sends each connected daemon a probe with a fresh nonce;
the daemon answers with the nonce signed by its authority key. The relay verifies the
answer against the directory and records when each authority last answered and how long
the round trip took.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from keys.directory import Directory
from keys.encoding import b64e
from keys.errors import KeysError
from keys.receipts import verify_probe
from keys.wire import Probe
from relay.core.delivery import Clock, Hub
from relay.core.errors import RejectedError, from_keys_error

log = logging.getLogger(__name__)


class Prober:
    def __init__(
        self,
        *,
        hub: Hub,
        directory: Callable[[], Directory],
        clock: Clock,
        interval_s: float = 60.0,
    ) -> None:
        self.hub = hub
        self._directory = directory
        self.clock = clock
        self.interval_s = interval_s
        self.answers: dict[str, int] = {}
        """authority -> when it last answered a probe (ms)."""
        self.rtt_ms: dict[str, int] = {}
        self._outstanding: dict[str, tuple[str, int]] = {}

    @property
    def window_ms(self) -> int:
        """How long an answer counts: two probe intervals and five seconds."""
        return int(2 * self.interval_s * 1000) + 5000

    def reachable(self, authority: str, now: int) -> bool:
        last = self.answers.get(authority)
        return last is not None and now - last <= self.window_ms

    async def round(self) -> int:
        """Probe every connected daemon once; returns how many probes were sent."""
        now = self.clock()
        horizon = now - int(2 * self.interval_s * 1000) - 5000
        self._outstanding = {n: v for n, v in self._outstanding.items() if v[1] >= horizon}
        sent = 0
        for session in self.hub.live():
            if session.control is None:
                continue  # a long-poll waiter: probes need a live connection
            nonce = b64e(os.urandom(16))
            self._outstanding[nonce] = (session.authority, now)
            try:
                await session.control(Probe(nonce=nonce))
                sent += 1
            except (ConnectionError, RuntimeError):
                self._outstanding.pop(nonce, None)
        return sent

    def answer(self, authority: str, nonce: object, token: object) -> None:
        """Record a daemon's signed probe answer, or refuse it."""
        if not isinstance(nonce, str) or not isinstance(token, str):
            raise RejectedError(
                "a probe answer needs 'nonce' and 'answer' strings", code="bad_probe"
            )
        sent = self._outstanding.get(nonce)
        if sent is None or sent[0] != authority:
            raise RejectedError("no such probe outstanding for you", code="unknown_probe")
        try:
            verify_probe(token, self._directory(), nonce=nonce, by=authority)
        except KeysError as exc:
            raise from_keys_error(exc) from exc
        del self._outstanding[nonce]
        now = self.clock()
        self.answers[authority] = now
        self.rtt_ms[authority] = now - sent[1]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.round()
            except Exception:
                log.exception("probe round failed")
