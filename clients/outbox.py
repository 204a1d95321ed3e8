"""The daemon's outbox worker: submit what the relay could not take when it was asked.

Two queues in the inbox (:mod:`clients.store.outbox`):

* envelopes ``notice send`` queued: each is submitted as soon as the relay answers,
  with the same message id, so a repeat is recognised (a ``duplicate`` answer counts as
  accepted). The relay's signed ``accepted`` receipt is verified against the pinned
  directory and recorded, as a direct send does. An envelope that expires while queued
  is never submitted: it is marked ``expired`` and the ``expired`` event fires.
* decision receipts (``notice ack``/``reject``) not yet confirmed by the relay: sent
  until the relay stores them (or already had them).

A failed attempt is retried after an exponential backoff with full jitter
(:func:`clients.store.outbox.backoff_ms`, capped by ``cap_s``); when the daemon
(re)connects, :meth:`OutboxWorker.wake` makes everything due at once. A refusal (4xx)
is final: the item is marked ``failed`` with the relay's reason, and shown by ``notice
sent`` / ``notice inbox``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

from clients.client import RelayClient
from clients.errors import ClientError, RelayProblem
from clients.store import Inbox, OutboxEntry, ReceiptUpload
from keys.directory import Directory
from keys.envelope import envelope_hash
from keys.errors import KeysError
from keys.receipts import verify_receipt

__all__ = ["EventHook", "OutboxWorker", "log_event", "retryable"]

log = logging.getLogger(__name__)
Clock = Callable[[], int]
EventHook = Callable[[str, str], Awaitable[object]]
"""``(event, message id)``: something a person should know happened (``expired``). The
daemon's hook runner takes it (one call site, :meth:`OutboxWorker.submit`); until then
:func:`log_event` writes it to the log."""


async def log_event(event: str, msg_id: str) -> None:
    """The default event hook: a WARNING in the daemon's log."""
    log.warning("EVENT %s: message %s", event, msg_id)


def retryable(exc: ClientError) -> bool:
    """True if the relay may take it later (unreachable, 5xx, 429, a garbled answer)."""
    if isinstance(exc, RelayProblem):
        return exc.status >= 500 or exc.status == 429
    return True


class OutboxWorker:
    def __init__(
        self,
        inbox: Inbox,
        client: Callable[[], RelayClient],
        directory: Callable[[], Directory],
        *,
        clock: Clock,
        rand: Callable[[], float] = random.random,
        cap_s: float = 30.0,
        on_event: EventHook = log_event,
    ) -> None:
        self.inbox = inbox
        self._client = client
        self._directory = directory
        self._clock = clock
        self._rand = rand
        self._cap_ms = int(cap_s * 1000)
        self._on_event = on_event
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """The relay answers again: try everything queued now, whatever its backoff."""
        self._wake.set()

    async def run_forever(self, stop: asyncio.Event, interval: float) -> None:
        """Work the queues every ``interval`` seconds (at once when woken) until ``stop``."""
        while not stop.is_set():
            try:
                if self._wake.is_set():
                    self._wake.clear()
                    now = self._clock()
                    await self.inbox.outbox.wake(now)
                    await self.inbox.uploads.wake(now)
                await self.run_due(stop)
            except Exception:
                log.exception("outbox round failed; trying again in %.1f s", interval)
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def run_due(self, stop: asyncio.Event | None = None) -> int:
        """Handle every item due now, once (oldest first); returns how many."""
        now = self._clock()
        entries = await self.inbox.outbox.due(now)
        uploads = await self.inbox.uploads.due(now)
        for entry in entries:
            if stop is not None and stop.is_set():
                break
            await self.submit(entry)
        for upload in uploads:
            if stop is not None and stop.is_set():
                break
            await self.upload(upload)
        return len(entries) + len(uploads)

    async def submit(self, entry: OutboxEntry) -> None:
        """Submit one queued envelope (or expire it), and record the outcome."""
        outbox = self.inbox.outbox
        now = self._clock()
        if now >= entry.expires:
            await outbox.mark_expired(entry.id, at=now)
            await asyncio.to_thread(_remove, entry.files)
            log.warning("message %s expired in the outbox; it was never submitted", entry.id)
            await self._on_event("expired", entry.id)
            return
        try:
            directory = self._directory()
            client = self._client()
            for digest, path in entry.files:  # by hash: uploading again is harmless
                await client.upload_attachment(path, digest)
            result = await client.send(entry.token)
        except (ClientError, OSError) as exc:
            failure = exc if isinstance(exc, ClientError) else ClientError(str(exc))
            await self._failed(entry.id, failure, outbox.retry, outbox.mark_failed, "message")
            if not retryable(failure):
                await asyncio.to_thread(_remove, entry.files)
            return
        try:
            receipt = await asyncio.to_thread(
                verify_receipt, result.receipt, directory, now=self._clock()
            )
        except KeysError as exc:
            # The relay holds it (it answered), but its receipt does not verify: keep
            # asking; the answer to a repeat is the same statement, or a correct one.
            await outbox.retry(
                entry.id, error=f"receipt does not verify: {exc}", now=now, rand=self._rand()
            )
            log.warning("message %s: the relay's receipt does not verify: %s", entry.id, exc)
            return
        b = receipt.body
        if b.msg != entry.id or b.env != envelope_hash(entry.token) or b.status != "accepted":
            await outbox.retry(
                entry.id, error="the relay's receipt is about something else", now=now, rand=1.0
            )
            log.warning("message %s: the relay answered with another receipt", entry.id)
            return
        await self.inbox.sent.record_receipt(
            entry.id, receipt.token, status=b.status, signer=b.by, at=b.at
        )
        await outbox.mark_submitted(entry.id, at=self._clock())
        await asyncio.to_thread(_remove, entry.files)
        again = " (it had it already)" if result.duplicate else ""
        log.info("queued message %s accepted by %s%s", entry.id, b.by, again)

    async def upload(self, upload: ReceiptUpload) -> None:
        """Send one decision receipt; done once the relay stored it (or had it)."""
        uploads = self.inbox.uploads
        try:
            await self._client().send_receipt(upload.token)
        except ClientError as exc:
            await self._failed(upload.msg_id, exc, uploads.retry, uploads.mark_failed, "receipt")
            return
        await uploads.mark_sent(upload.msg_id, at=self._clock())
        log.info("%s receipt for message %s confirmed by the relay", upload.status, upload.msg_id)

    async def _failed(
        self,
        key: str,
        exc: ClientError,
        retry: Callable[..., Awaitable[int]],
        fail: Callable[..., Awaitable[None]],
        what: str,
    ) -> None:
        now = self._clock()
        if retryable(exc):
            due = await retry(key, error=str(exc), now=now, rand=self._rand(), cap_ms=self._cap_ms)
            log.info(
                "%s %s not taken yet (%s); next try in %.1f s", what, key, exc, (due - now) / 1e3
            )
        else:
            await fail(key, error=str(exc), at=now)
            log.warning("the relay refused %s %s: %s; not retried", what, key, exc)


def _remove(files: tuple[tuple[str, str], ...]) -> None:
    """Delete a queued message's encrypted attachments, and their folder once empty."""
    for _, name in files:
        path = Path(name)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()
