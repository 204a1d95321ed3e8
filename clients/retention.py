"""The daemon's retention: forget closed messages older than ``retention_days``.

Once an hour (and at start) the daemon takes the closed messages past the period from
the local inbox (:mod:`clients.store.retention`), batch by batch. When
``retention_archive_dir`` is set, each one's evidence (the envelope, the decision, every
signed receipt, and for a received message the decrypted notice) is first written there
as one JSON file, ``<YYYY-MM>/<received|sent>-<id>.json`` (0600, fsynced), and only then
deleted from the inbox, so a crash in between loses nothing. Downloaded attachments of a
forgotten received message are deleted with it, and so are the audit trail's entries
(:mod:`clients.store.audit`) older than the period. Each run that forgets anything logs
one line; the totals are in :class:`RetentionStats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clients.store import Inbox
from clients.store.retention import Evidence
from keys.files import open_private, private_dir

__all__ = ["RetentionStats", "RetentionWorker", "archive"]

log = logging.getLogger(__name__)
DAY_MS = 86_400_000
BATCH = 500


@dataclass
class RetentionStats:
    received: int = 0
    sent: int = 0
    receipts: int = 0
    events: int = 0
    archived: int = 0
    audit: int = 0
    """Audit-trail entries older than the period."""
    last_run_at: int | None = None


def archive(folder: Path, evidence: Sequence[Evidence]) -> int:
    """Write each message's evidence as one JSON file, durably (blocking: off the loop)."""
    months: set[Path] = set()
    for e in evidence:
        month = datetime.fromtimestamp(e.at / 1000, tz=UTC).strftime("%Y-%m")
        target = private_dir(folder / month)
        months.add(target)
        path = target / f"{e.kind}-{e.msg_id}.json"
        tmp = path.with_suffix(".tmp")
        with open_private(tmp) as fh:
            body = {"kind": e.kind, "archived_from": "cpar daemon retention", **e.record}
            fh.write(json.dumps(body, indent=2, ensure_ascii=False).encode("utf-8") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    for written in months:  # the renames themselves survive a crash
        fd = os.open(written, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return len(evidence)


class RetentionWorker:
    def __init__(
        self,
        inbox: Inbox,
        *,
        days: float,
        archive_dir: Path | None,
        clock: Callable[[], int],
    ) -> None:
        self.inbox = inbox
        self.days = days
        self.archive_dir = archive_dir
        self.clock = clock
        self.stats = RetentionStats()

    async def run_once(self) -> RetentionStats:
        """Forget everything past the period now; returns this run's counts."""
        now = self.clock()
        before = now - int(self.days * DAY_MS)
        run = RetentionStats()
        while True:
            due = await self.inbox.retention.due(before, now=now, limit=BATCH)
            if due and self.archive_dir is not None:
                run.archived += await asyncio.to_thread(archive, self.archive_dir, due)
            gone = await self.inbox.retention.forget(due, before=before, now=now)
            received = [e.msg_id for e in due if e.kind == "received"]
            await asyncio.to_thread(self._remove_attachments, list(gone.received_ids))
            run.received += gone.received
            run.sent += gone.sent
            run.receipts += gone.receipts
            run.events += gone.events
            if len(received) < BATCH and len(due) - len(received) < BATCH:
                break
        run.audit = await self.inbox.audit.prune(before)
        run.last_run_at = self.clock()
        for name in ("received", "sent", "receipts", "events", "archived", "audit"):
            setattr(self.stats, name, getattr(self.stats, name) + getattr(run, name))
        self.stats.last_run_at = run.last_run_at
        if run.received or run.sent or run.audit:
            log.info(
                "retention: forgot %d received and %d sent closed message(s) older than "
                "%g days (%d receipt(s), %d event(s), %d audit entr(ies))%s",
                run.received,
                run.sent,
                self.days,
                run.receipts,
                run.events,
                run.audit,
                f", evidence archived in {self.archive_dir}" if self.archive_dir else "",
            )
        return run

    def _remove_attachments(self, msg_ids: list[str]) -> None:
        for msg_id in msg_ids:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(self.inbox.attachments_dir / msg_id)

    async def run_forever(self, stop: asyncio.Event, interval: float) -> None:
        """At start and then every ``interval`` seconds until ``stop``; off when days is 0."""
        if self.days <= 0:
            return
        failing = False
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception as exc:
                if not failing:
                    log.warning("retention: pruning the inbox failed (%s); retrying", exc)
                failing = True
            else:
                if failing:
                    log.info("retention: pruning the inbox works again")
                failing = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()
