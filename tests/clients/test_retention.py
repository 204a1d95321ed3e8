"""The daemon's retention: closed messages past the period leave the inbox, their
evidence archived first; open, pending or recent ones stay."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clients.retention import RetentionWorker
from clients.store import Inbox, InboxError
from keys.envelope import envelope_hash
from keys.receipts import sign_receipt
from tests.inboxfixture import PHOTO, deliver
from tests.netfixture import NOW, Network

DAY = 86_400_000
HOUR = 3_600_000
LATER = NOW + 400 * DAY + HOUR  # "now" when retention runs: cut-off NOW + 1 h


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    box = await Inbox.open(tmp_path / "inbox.sqlite3")
    yield box
    await box.close()


async def _received(net: Network, inbox: Inbox, *, at: int = NOW, **kw: Any) -> str:
    opened, token = deliver(net, now=at, **kw)
    assert await inbox.received.store(opened, token, received_at=at + 1000)
    return opened.header.id


async def _decide(net: Network, inbox: Inbox, msg_id: str, *, confirmed: bool) -> str:
    msg = await inbox.received.get(msg_id)
    assert msg is not None
    await inbox.received.mark_acknowledged(msg_id, person="Officer Dupont", at=msg.received_at + 5)
    token = sign_receipt(
        net["fr-oclcc"],
        status="acknowledged",
        msg_id=msg_id,
        envelope_hash=msg.envelope_hash,
        now=msg.received_at + 5,
    )
    await inbox.uploads.add(msg_id, token, status="acknowledged", now=msg.received_at + 5)
    if confirmed:
        await inbox.uploads.mark_sent(msg_id, at=msg.received_at + 6)
    return token


async def _sent(net: Network, inbox: Inbox, *statuses: str, at: int = NOW) -> str:
    opened, _ = deliver(net, now=at)
    msg_id = opened.header.id
    await inbox.sent.record(
        msg_id,
        to=["fr-oclcc"],
        envelope_hash=opened.hash,
        created=at,
        priority="urgent",
        summary="s",
    )
    for i, status in enumerate(statuses):
        signer = net.relay if status in ("accepted", "expired") else net["fr-oclcc"]
        token = sign_receipt(
            signer,
            status=status,  # type: ignore[arg-type]
            msg_id=msg_id,
            envelope_hash=opened.hash,
            now=at + i + 1,
        )
        await inbox.sent.record_receipt(
            msg_id, token, status=status, signer=signer.id, at=at + i + 1
        )
    return msg_id


async def test_closed_messages_past_the_period_are_archived_then_forgotten(
    net: Network, inbox: Inbox, tmp_path: Path
) -> None:
    acked = await _received(net, inbox, attachments=[PHOTO])
    decision = await _decide(net, inbox, acked, confirmed=True)
    unconfirmed = await _received(net, inbox)
    await _decide(net, inbox, unconfirmed, confirmed=False)  # the relay has not got it yet
    never_handled = await _received(net, inbox)  # expired long ago, never acknowledged
    recent = await _received(net, inbox, at=NOW + 2 * HOUR)
    await _decide(net, inbox, recent, confirmed=True)
    closed_sent = await _sent(net, inbox, "accepted", "delivered", "acknowledged")
    open_sent = await _sent(net, inbox, "accepted", "delivered")
    await inbox.events.record("escalation", "0" * 8, at=NOW)  # about someone else's message
    photo = inbox.attachment_path(acked, "front.jpg")
    await asyncio.to_thread(photo.parent.mkdir, parents=True)
    await asyncio.to_thread(photo.write_bytes, b"decrypted photo")

    archive_dir = tmp_path / "archive"
    worker = RetentionWorker(inbox, days=400, archive_dir=archive_dir, clock=lambda: LATER)
    run = await worker.run_once()

    assert (run.received, run.sent, run.receipts, run.archived) == (2, 1, 3, 3)
    assert run.events == 1
    for gone in (acked, never_handled):
        assert await inbox.received.get(gone) is None
    for kept in (unconfirmed, recent):
        assert await inbox.received.get(kept) is not None
    assert await inbox.sent.get(closed_sent) is None
    assert await inbox.sent.timeline(closed_sent) == []
    assert await inbox.sent.get(open_sent) is not None
    assert not await asyncio.to_thread(photo.parent.exists)

    month = archive_dir / datetime.fromtimestamp(NOW / 1000, tz=UTC).strftime("%Y-%m")
    record = json.loads(await asyncio.to_thread((month / f"received-{acked}.json").read_text))
    assert record["kind"] == "received" and record["id"] == acked
    assert record["decision_receipt"] == decision
    assert record["acknowledged_by"] == "Officer Dupont"
    assert record["content"]["kind"] == "identification_notice"
    assert envelope_hash(record["envelope"]) == record["envelope_hash"]  # as received
    sent_record = json.loads(
        await asyncio.to_thread((month / f"sent-{closed_sent}.json").read_text)
    )
    assert [r["status"] for r in sent_record["receipts"]] == [
        "accepted",
        "delivered",
        "acknowledged",
    ]
    mode = (await asyncio.to_thread(os.stat, month / f"sent-{closed_sent}.json")).st_mode
    assert stat.S_IMODE(mode) == 0o600
    # A second run has nothing left to forget.
    again = await worker.run_once()
    assert (again.received, again.sent, again.archived) == (0, 0, 0)
    assert worker.stats.received == 2 and worker.stats.last_run_at == LATER


async def test_nothing_is_forgotten_when_the_evidence_cannot_be_archived(
    net: Network, inbox: Inbox, tmp_path: Path
) -> None:
    acked = await _received(net, inbox)
    await _decide(net, inbox, acked, confirmed=True)
    blocked = tmp_path / "archive"
    await asyncio.to_thread(blocked.write_text, "a file where the folder should be")
    worker = RetentionWorker(inbox, days=400, archive_dir=blocked, clock=lambda: LATER)
    with pytest.raises(OSError):
        await worker.run_once()
    assert await inbox.received.get(acked) is not None


async def test_retention_zero_keeps_everything(net: Network, inbox: Inbox) -> None:
    acked = await _received(net, inbox)
    await _decide(net, inbox, acked, confirmed=True)
    stop = asyncio.Event()
    worker = RetentionWorker(inbox, days=0, archive_dir=None, clock=lambda: LATER)
    await asyncio.wait_for(worker.run_forever(stop, 0.01), 5)  # returns at once: off
    assert await inbox.received.get(acked) is not None


async def test_a_closed_inbox_is_an_inbox_error(inbox: Inbox) -> None:
    await inbox.close()
    with pytest.raises(InboxError):
        await RetentionWorker(inbox, days=1, archive_dir=None, clock=lambda: LATER).run_once()
