"""Sending a notice, and following what became of it.

* :func:`send`: fetch the directory through the pin, encrypt and upload attachments,
  seal the message, submit it (retrying the same envelope on a broken connection), record
  it locally, and verify the relay's signed ``accepted`` receipt. Success is returned only
  for a receipt that verifies. When the relay cannot be reached (or answers 503) the
  envelope, sealed with the locally pinned directory, is queued in the outbox instead
  (``SendResult.queued``): the daemon submits it (:mod:`clients.outbox`).
* :func:`status_online`: the receipt timeline from the relay, every receipt verified
  offline against the pinned directory and recorded locally.
* :func:`status_offline`: the receipts recorded locally.
* :func:`message_state`: the message state implied by a list of receipt statuses.

Refusals are :class:`clients.refusal.RefusedError` (one sentence for the user). Blocking work
(files, signatures, sealing) runs in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import JsonValue, ValidationError

from clients.client import RelayClient, SubmitResult
from clients.config import ClientSettings
from clients.directory import PinnedDirectory, check_recipients
from clients.errors import TransportError, UnavailableError
from clients.hooks import fire_event
from clients.kinds import Notice, summary
from clients.logwatch import LogWatch
from clients.refusal import RefusedError, one_line
from clients.store import Inbox, StoredReceipt
from keys import wire
from keys.attachments import encrypt_file
from keys.directory import Directory
from keys.envelope import SealedEnvelope, seal
from keys.errors import KeysError
from keys.identity import Identity
from keys.jws import unverified_payload
from keys.lifecycle import state_from_receipts
from keys.models import AttachmentManifestEntry, EnvelopeHeader, Priority, ReceiptBody
from keys.receipts import verify_receipt

__all__ = [
    "SUBMIT_RETRY_DELAYS_S",
    "Outgoing",
    "ReceiptRow",
    "SendResult",
    "SentStatus",
    "message_state",
    "send",
    "status_offline",
    "status_online",
]

log = logging.getLogger(__name__)
Clock = Callable[[], int]
SUBMIT_RETRY_DELAYS_S = (0.5, 2.0)


@dataclass(frozen=True)
class Outgoing:
    """A message to send, already validated (nothing here needs keys or the network)."""

    to: tuple[str, ...]
    fallback: tuple[str, ...]
    priority: Priority
    ttl_ms: int
    ack_within_ms: int | None
    handling: tuple[str, ...]
    attachments: tuple[Path, ...]
    content: dict[str, JsonValue]
    notice: Notice


@dataclass(frozen=True)
class SendResult:
    """An accepted message (its verified receipt), or one queued in the outbox."""

    sealed: SealedEnvelope
    relay: str
    accepted_at: int | None
    receipt: str | None
    duplicate: bool
    attachments: tuple[AttachmentManifestEntry, ...]
    recipients: tuple[wire.Presence, ...] = ()
    """Each recipient's presence as the relay saw it at accept time."""
    schedule: tuple[wire.PlannedStep, ...] = ()
    """The message's escalation plan, from the relay."""
    queued: bool = False
    why_queued: str | None = None
    """Why the relay did not take it now (unreachable, unavailable)."""

    @property
    def state(self) -> str:
        return "queued" if self.queued else "accepted"


UNREACHABLE = (TransportError, UnavailableError)
"""The relay cannot take a message now: queue it (any other refusal is final)."""


# --- send ---------------------------------------------------------------------------------


async def send(
    settings: ClientSettings,
    identity: Identity,
    pinned: PinnedDirectory,
    out: Outgoing,
    *,
    clock: Clock,
    queue: bool = True,
    refresh_timeout_s: float | None = None,
) -> SendResult:
    """Seal ``out``, submit it, record it, and verify the relay's ``accepted`` receipt.

    With ``queue`` (the default), a relay that cannot be reached or answers 503 does not
    stop the message: it is sealed with the pinned directory and queued in the outbox.
    ``refresh_timeout_s`` bounds the first exchange (the directory refresh): a relay
    that has not answered by then counts as unreachable (the officer console uses it,
    so a relay that accepts connections and never answers does not hold a person).
    """
    async with RelayClient(
        settings.relay_url, identity, clock=clock, tls_pins=pinned.tls_pins
    ) as client:
        try:
            async with asyncio.timeout(refresh_timeout_s):
                refreshed = await pinned.refresh(client)
            directory = pinned.usable(refreshed, clock())
            offline: str | None = None
        except TimeoutError:
            offline = (
                "the relay did not answer in time"
                if refresh_timeout_s is None
                else f"the relay did not answer within {refresh_timeout_s:g} s"
            )
            directory = _offline_directory(pinned, offline, queue=queue)
        except UNREACHABLE as exc:
            offline = one_line(str(exc))
            directory = _offline_directory(pinned, offline, queue=queue)
        check_recipients(directory, (*out.to, *out.fallback))
        entries: list[AttachmentManifestEntry] = []
        files: list[tuple[str, str]] = []
        if offline is None:
            tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="notice-attach-"))
            try:
                for path in out.attachments:
                    entry, blob = await asyncio.to_thread(encrypt_file, path, tmp)
                    await client.upload_attachment(blob, entry.h)
                    await asyncio.to_thread(blob.unlink, True)
                    entries.append(entry)
            finally:
                await asyncio.to_thread(shutil.rmtree, tmp, True)
        elif out.attachments:
            # Encrypted now, kept beside the inbox: the daemon uploads them, then submits.
            spool = await asyncio.to_thread(_spool_dir, settings)
            for path in out.attachments:
                entry, blob = await asyncio.to_thread(encrypt_file, path, spool)
                entries.append(entry)
                files.append((entry.h, str(blob)))
        now = clock()

        def do_seal() -> SealedEnvelope:
            return seal(
                identity,
                directory,
                to=out.to,
                fallback=out.fallback,
                content=out.content,
                now=now,
                priority=out.priority,
                ttl_ms=out.ttl_ms,
                ack_by=None if out.ack_within_ms is None else now + out.ack_within_ms,
                handling=out.handling,
                attachments=entries,
            )

        sealed = await asyncio.to_thread(do_seal)
        if offline is not None:
            return await _queue(
                settings, sealed, out, offline, clock=clock, entries=entries, files=files
            )
        try:
            submitted = await submit(client, sealed.token)
        except UNREACHABLE as exc:
            # It may have been committed before the connection broke: the outbox submits
            # the same envelope again, which the relay recognises by its id.
            if queue:
                why = one_line(str(exc))
                return await _queue(settings, sealed, out, why, clock=clock, entries=entries)
            async with await Inbox.open(settings.inbox_path) as inbox:
                await record_sent(inbox, sealed, out.notice)
            raise RefusedError(
                f"message {sealed.id} may not have reached the relay ({exc}); check with "
                f"'notice status {sealed.id}' before sending it again"
            ) from None

    async with await Inbox.open(settings.inbox_path) as inbox:
        # The relay holds the message now, whatever its receipt says: remember it.
        await record_sent(inbox, sealed, out.notice)
        if submitted.id != sealed.id:
            raise RefusedError(
                f"the relay answered for message {submitted.id[:40]}, not {sealed.id}; "
                "the message is not confirmed"
            )
        try:
            receipt = verify_receipt(
                submitted.receipt,
                directory,
                header=sealed.header,
                envelope_hash=sealed.hash,
                now=clock(),
            )
        except KeysError as exc:
            raise RefusedError(
                f"message {sealed.id} was sent but the relay's receipt does not verify "
                f"({exc}); it is not confirmed"
            ) from None
        if receipt.status != "accepted":
            raise RefusedError(
                f"message {sealed.id}: the relay returned a {receipt.status} receipt, "
                "not accepted; it is not confirmed"
            )
        b = receipt.body
        await inbox.sent.record_receipt(
            sealed.id, receipt.token, status=b.status, signer=b.by, at=b.at
        )
        if not submitted.duplicate:
            sent = {"to": list(sealed.header.to), "priority": sealed.header.prio}
            await fire_event(inbox, settings.hooks, "sent", sealed.id, at=b.at, data=sent)
    return SendResult(
        sealed=sealed,
        relay=b.by,
        accepted_at=b.at,
        receipt=receipt.token,
        duplicate=submitted.duplicate,
        attachments=tuple(entries),
        recipients=tuple(submitted.recipients or ()),
        schedule=tuple(submitted.schedule or ()),
    )


def _offline_directory(pinned: PinnedDirectory, why: str, *, queue: bool) -> Directory:
    """The pinned directory to seal with while the relay cannot be reached, or a refusal."""
    if not queue:
        raise RefusedError(f"nothing was sent: {why} (--no-queue)")
    if pinned.current is None:
        raise RefusedError(
            f"nothing was sent: {why}; no directory is pinned yet to seal with (the first "
            "send, or the daemon's first connection, needs the relay)"
        )
    return pinned.require()


def _spool_dir(settings: ClientSettings) -> Path:
    """A new private folder for the encrypted attachments of one queued message."""
    parent = settings.data_dir / "outbox-files"
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="msg-", dir=parent))


async def _queue(
    settings: ClientSettings,
    sealed: SealedEnvelope,
    out: Outgoing,
    why: str,
    *,
    clock: Clock,
    entries: Sequence[AttachmentManifestEntry] = (),
    files: Sequence[tuple[str, str]] = (),
) -> SendResult:
    """Record the message as sent and queue its envelope (and the encrypted attachment
    ``files`` to upload first) for the daemon to submit."""
    async with await Inbox.open(settings.inbox_path) as inbox:
        await record_sent(inbox, sealed, out.notice)
        await inbox.outbox.queue(
            sealed.id, sealed.token, expires=sealed.header.expires, now=clock(), files=files
        )
    log.info("message %s queued: %s", sealed.id, why)
    return SendResult(
        sealed=sealed,
        relay=settings.relay_url,
        accepted_at=None,
        receipt=None,
        duplicate=False,
        attachments=tuple(entries),
        queued=True,
        why_queued=why,
    )


async def submit(client: RelayClient, token: str) -> SubmitResult:
    """Send one envelope; on a broken connection send the same one again (idempotent)."""
    for delay in SUBMIT_RETRY_DELAYS_S:
        try:
            return await client.send(token)
        except TransportError as exc:
            log.info("sending failed (%s); trying again in %.1f s", exc, delay)
            await asyncio.sleep(delay)
    return await client.send(token)


async def record_sent(inbox: Inbox, sealed: SealedEnvelope, notice: Notice) -> None:
    """Remember a sealed message as sent (recording it again is not an error)."""
    await inbox.sent.record(
        sealed.id,
        to=sealed.header.to,
        envelope_hash=sealed.hash,
        created=sealed.header.created,
        priority=sealed.header.prio,
        summary=summary(notice),
    )


# --- status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptRow:
    """One receipt in a timeline, verified (``body``) or not (``error``)."""

    token: str
    body: ReceiptBody | None
    error: str | None


@dataclass(frozen=True)
class SentStatus:
    """A sent message and its receipt timeline, from the relay or the local records."""

    id: str
    state: str
    source: str
    to: tuple[str, ...]
    fallback: tuple[str, ...]
    priority: str | None
    created: int | None
    expires: int | None
    ack_by: int | None
    envelope_hash: str | None
    summary: str | None
    rows: tuple[ReceiptRow, ...]

    @property
    def invalid(self) -> int:
        return sum(1 for r in self.rows if r.error is not None)


def message_state(statuses: Sequence[str]) -> str:
    """The message state from its receipts, by the relay's own table (keys.lifecycle)."""
    return state_from_receipts(statuses)


async def status_online(
    settings: ClientSettings,
    identity: Identity,
    pinned: PinnedDirectory,
    msg_id: str,
    *,
    clock: Clock,
) -> SentStatus:
    """The relay's timeline of a message we sent, each receipt verified and recorded."""
    async with RelayClient(
        settings.relay_url, identity, clock=clock, tls_pins=pinned.tls_pins
    ) as client:
        directory = pinned.usable(await pinned.refresh(client), clock())
        t = await client.timeline(msg_id)
        # The receipts are only as good as the log they are in: refuse a rewritten one.
        await LogWatch(settings.log_head_path).check(client, directory)
    try:
        header = EnvelopeHeader.model_validate(t.header)
    except ValidationError as exc:
        raise RefusedError(f"the relay returned an invalid header for message {msg_id}") from exc
    if header.id != msg_id or header.from_ != identity.id:
        raise RefusedError(f"the relay returned the timeline of another message than {msg_id}")
    async with await Inbox.open(settings.inbox_path) as inbox:
        local = await inbox.sent.get(msg_id)
        expected = t.envelope_hash
        if local is not None and local.envelope_hash != t.envelope_hash:
            raise RefusedError(
                f"the relay's record of message {msg_id} is not the envelope this authority "
                "sent (envelope hash differs)"
            )
        now = clock()

        def verify_all() -> list[ReceiptRow]:
            rows = []
            for token in t.receipts:
                if not isinstance(token, str):
                    rows.append(
                        ReceiptRow(token="", body=None, error="not a receipt (not a string)")
                    )
                    continue
                try:
                    r = verify_receipt(
                        token, directory, header=header, envelope_hash=expected, now=now
                    )
                    rows.append(ReceiptRow(token=r.token, body=r.body, error=None))
                except KeysError as exc:
                    rows.append(ReceiptRow(token=str(token), body=None, error=one_line(str(exc))))
            return rows

        rows = await asyncio.to_thread(verify_all)
        for row in rows:
            if row.body is not None:
                b = row.body
                await inbox.sent.record_receipt(
                    msg_id, row.token, status=b.status, signer=b.by, at=b.at
                )
    return SentStatus(
        id=msg_id,
        state=t.state,
        source="relay",
        to=tuple(header.to),
        fallback=tuple(header.fallbacks),
        priority=header.prio,
        created=header.created,
        expires=header.expires,
        ack_by=header.ack_by,
        envelope_hash=expected,
        summary=local.summary if local is not None else None,
        rows=tuple(rows),
    )


def _stored_body(r: StoredReceipt) -> ReceiptBody | None:
    try:
        return ReceiptBody.model_validate(unverified_payload(r.token, what="stored receipt"))
    except (KeysError, ValidationError):
        return None


async def status_offline(path: Path, msg_id: str) -> SentStatus:
    """What the inbox at ``path`` recorded about a message we sent (no network)."""
    async with await Inbox.open(path) as inbox:
        local = await inbox.sent.get(msg_id)
        stored = await inbox.sent.timeline(msg_id)
    if local is None and not stored:
        raise RefusedError(f"no message {msg_id} in the local records")
    rows = []
    for r in stored:
        body = _stored_body(r)
        error = None if body else "stored receipt is unreadable"
        # Receipts recorded by the daemon were checked for signature and signer role; check
        # here, with what is known locally, that each is about this very envelope.
        if body is not None and (
            body.msg != msg_id or (local is not None and body.env != local.envelope_hash)
        ):
            error = "receipt is about a different envelope than the one sent"
        rows.append(ReceiptRow(r.token, None if error else body, error))
    return SentStatus(
        id=msg_id,
        # With the outbox's word on a message the relay never took (queued, expired, failed).
        state=local.state if local else message_state([r.status for r in stored]),
        source="local",
        to=local.to if local else (),
        fallback=(),
        priority=local.priority if local else None,
        created=local.created if local else None,
        expires=None,
        ack_by=None,
        envelope_hash=local.envelope_hash if local else None,
        summary=local.summary if local else None,
        rows=tuple(rows),
    )
