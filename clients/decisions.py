"""Deciding on a received message: acknowledge it (a named person takes it in hand) or
reject it (with a reason the sender sees).

:func:`decide` signs the receipt first (a keystore that cannot sign must not leave a
decision without receipt), records the decision and its receipt in the inbox (final;
the receipt in the outbox's upload queue, :mod:`clients.store.outbox`), then sends the
receipt to the relay. If the relay cannot take it now, the decision stands and the
daemon sends the receipt until the relay confirms it (``Decision.sent`` is False); a
refusal (4xx) is recorded as failed and reported. Running it again with the same
decision re-sends the same statement (same time), which the relay recognises as a
repeat; a different decision is refused. Refusals are
:class:`clients.refusal.RefusedError`.

With an :class:`Actor` the decision also goes into the audit trail
(:mod:`clients.store.audit`), as soon as it stands locally and before the receipt is
sent: whatever the relay then says, the trail holds what the person did. A decision
refused (already taken otherwise) is not recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clients.client import RelayClient
from clients.config import ClientSettings
from clients.directory import PinnedDirectory
from clients.errors import ClientError
from clients.outbox import retryable
from clients.refusal import RefusedError, one_line
from clients.store import (
    AlreadyDecidedError,
    Inbox,
    InboxError,
    InboxMessage,
    UnknownMessageError,
)
from clients.store.received import MAX_PERSON, MAX_REASON
from keys.identity import Identity
from keys.receipts import sign_receipt

__all__ = ["Actor", "Decision", "DecisionStatus", "decide"]

log = logging.getLogger(__name__)
Clock = Callable[[], int]
DecisionStatus = Literal["acknowledged", "rejected"]


@dataclass(frozen=True)
class Actor:
    """Who takes a decision, for the audit trail: the person's name and how (the console
    and its address, or the command and the login running it)."""

    person: str
    detail: str


@dataclass(frozen=True)
class Decision:
    msg: InboxMessage
    status: str
    at: int
    repeat: bool
    """The same decision had been recorded before; its receipt was sent again."""
    new_at_relay: bool
    sent: bool = True
    """The relay confirmed the receipt now; if not, the daemon sends it (``pending``)."""
    pending: str | None = None
    """Why the receipt could not be sent now."""


async def decide(
    settings: ClientSettings,
    identity: Identity,
    path: Path | None,
    msg_id: str,
    status: DecisionStatus,
    *,
    person: str | None = None,
    reason: str | None = None,
    clock: Clock,
    actor: Actor | None = None,
) -> Decision:
    """Acknowledge (``person``) or reject (``reason``) message ``msg_id`` of the inbox at
    ``path`` (None: there is no inbox yet), and send the signed receipt to the relay;
    with ``actor``, record it in the audit trail."""
    if path is None:
        raise UnknownMessageError(f"no message {msg_id} in the inbox")
    now = clock()

    def sign(msg: InboxMessage, at: int, person: str | None, reason: str | None) -> str:
        return sign_receipt(
            identity,
            msg_id=msg.id,
            envelope_hash=msg.envelope_hash,
            status=status,
            now=at,
            person=person,
            reason=reason,
        )

    async with await Inbox.open(path) as inbox:
        msg = await inbox.received.get(msg_id)
        if msg is None:
            raise UnknownMessageError(f"no message {msg_id} in the inbox")
        if status == "acknowledged" and person is not None and not 1 <= len(person) <= MAX_PERSON:
            raise RefusedError(f"the person's name must be 1 to {MAX_PERSON} characters")
        if status == "rejected" and reason is not None and not 1 <= len(reason) <= MAX_REASON:
            raise RefusedError(f"the reason must be 1 to {MAX_REASON} characters")
        # Sign first: a keystore that cannot sign must not leave a decision without receipt.
        token = await asyncio.to_thread(sign, msg, now, person, reason)
        repeat = False
        try:
            if status == "acknowledged":
                assert person is not None
                msg = await inbox.received.mark_acknowledged(msg_id, person=person, at=now)
            else:
                assert reason is not None
                msg = await inbox.received.mark_rejected(msg_id, reason=reason, at=now)
        except AlreadyDecidedError:
            msg = await inbox.received.get(msg_id)
            assert msg is not None
            if msg.state != status:
                raise RefusedError(
                    f"message {msg_id} was already {msg.state}; the decision is final"
                ) from None
            if status == "acknowledged" and msg.acknowledged_by != person:
                raise RefusedError(
                    f"message {msg_id} was already acknowledged by {msg.acknowledged_by}; "
                    "the decision is final"
                ) from None
            if status == "rejected" and msg.rejected_reason != reason:
                raise RefusedError(
                    f"message {msg_id} was already rejected with another reason; "
                    "the decision is final"
                ) from None
            assert msg.decided_at is not None
            # The same statement again (same time): the relay sees a repeat.
            token = await asyncio.to_thread(
                sign, msg, msg.decided_at, msg.acknowledged_by, msg.rejected_reason
            )
            repeat = True
        # Queued before it is sent: whatever happens next, the daemon finishes the job.
        await inbox.uploads.add(msg_id, token, status=status, now=now)
        if repeat:
            await inbox.uploads.resend(msg_id, now=now)
        if actor is not None:
            detail = actor.detail + (f": {reason}" if reason is not None else "")
            try:
                await inbox.audit.record(
                    person=actor.person,
                    action=status,
                    at=now,
                    message_id=msg_id,
                    detail=detail + (" (again)" if repeat else ""),
                )
            except InboxError as exc:  # the decision stands; say the trail missed it
                log.warning("the audit trail did not record the decision on %s: %s", msg_id, exc)
        decided_at = msg.decided_at if msg.decided_at is not None else now
        try:
            pinned = await asyncio.to_thread(PinnedDirectory.load, settings)
            async with RelayClient(
                settings.relay_url, identity, clock=clock, tls_pins=pinned.tls_pins
            ) as client:
                new = await client.send_receipt(token)
        except ClientError as exc:
            if not retryable(exc):
                await inbox.uploads.mark_failed(msg_id, error=str(exc), at=clock())
                raise RefusedError(
                    f"message {msg_id} is {status} in the local inbox, but the relay refused "
                    f"its receipt: {exc}"
                ) from None
            # Due at once: the daemon tries next, and backs off while the relay is down.
            await inbox.uploads.retry(msg_id, error=str(exc), now=clock(), rand=0.0)
            return Decision(
                msg=msg,
                status=status,
                at=decided_at,
                repeat=repeat,
                new_at_relay=False,
                sent=False,
                pending=one_line(str(exc)),
            )
        await inbox.uploads.mark_sent(msg_id, at=clock())
    return Decision(msg=msg, status=status, at=decided_at, repeat=repeat, new_at_relay=new)
