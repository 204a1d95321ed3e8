"""Retention: closed messages older than the configured period are forgotten.

Once an hour (and at start) the relay asks its store to prune, in batches, the closed
messages (acknowledged, rejected, expired) accepted more than ``retention_days`` ago,
with their receipts, timers and the queued copies of their envelope, then deletes the
files of the attachments no stored message references any more. What went is counted
in ``cpar_retention_pruned_total`` and logged in one line per run. The evidence a
message carries stays with the authorities: the sender's daemon keeps the envelope and
every receipt (``notice status MSGID --json`` exports them) under its own retention.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

from relay.core.delivery import Clock
from relay.core.intake import MessageIndex
from relay.core.metrics import Metrics
from relay.store.base import Pruned, Store

log = logging.getLogger(__name__)
DAY_MS = 86_400_000
BATCH = 500
"""Messages (and attachments) forgotten per store call: one short commit each."""


def _remove_files(folder: Path, digests: tuple[str, ...]) -> None:
    for digest in digests:
        (folder / digest[:2] / digest).unlink(missing_ok=True)


class Retention:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        attachments: Path,
        days: float,
        interval_s: float = 3600.0,
        index: MessageIndex | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.attachments = attachments
        self.days = days
        self.interval_s = interval_s
        self.index = index
        """The intake's metadata cache: a pruned message must not look known there."""

    async def run_once(self) -> Pruned:
        """Prune everything past the period now, batch after batch; the total."""
        before = self.clock() - int(self.days * DAY_MS)
        messages = receipts = queued = 0
        files: list[str] = []
        while True:
            got = await self.store.prune(before, limit=BATCH)
            await asyncio.to_thread(_remove_files, self.attachments, got.attachments)
            for what, n in (
                ("messages", got.messages),
                ("receipts", got.receipts),
                ("queued", got.queued),
                ("attachments", len(got.attachments)),
            ):
                self.metrics.pruned.labels(what=what).inc(n)
            messages, receipts, queued = (
                messages + got.messages,
                receipts + got.receipts,
                queued + got.queued,
            )
            files += got.attachments
            if got.messages < BATCH and len(got.attachments) < BATCH:
                break
        if messages and self.index is not None:
            self.index.forget_before(before)
        self.metrics.retention_run.set(self.clock() / 1000)
        if messages or files:
            log.info(
                "retention: forgot %d closed message(s) accepted before %s (%d receipt(s), "
                "%d unread envelope copies) and %d attachment(s)",
                messages,
                datetime.fromtimestamp(before / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC"),
                receipts,
                queued,
                len(files),
            )
        return Pruned(messages, receipts, queued, tuple(files))

    async def run(self) -> None:
        """Until cancelled: prune at start, then every ``interval_s``. Off when days is 0."""
        if self.days <= 0:
            log.info("retention is off (retention_days = 0): nothing is ever pruned")
            return
        failing = False
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("retention: pruning failed (%s); retrying hourly", exc)
                failing = True
            else:
                if failing:
                    log.info("retention: pruning works again")
                failing = False
            await asyncio.sleep(self.interval_s)
