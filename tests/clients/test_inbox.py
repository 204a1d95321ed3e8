"""The daemon's inbox: real envelopes into a real SQLite file, every call off the event loop."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clients.kinds import IdentificationNotice
from clients.store import (
    SCHEMA_VERSION,
    AlreadyDecidedError,
    Inbox,
    InboxError,
    InboxSchemaError,
    UnknownMessageError,
)
from keys.envelope import seal
from keys.receipts import sign_receipt
from tests.inboxfixture import NOTICE, PHOTO, deliver
from tests.netfixture import NOW, Network


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    box = await Inbox.open(tmp_path / "inbox.db")
    yield box
    await box.close()


async def _query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    def q() -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    return await asyncio.to_thread(q)


# --- storing -----------------------------------------------------------------------------


async def test_stored_message_keeps_everything_the_officer_needs(
    net: Network, inbox: Inbox
) -> None:
    opened, token = deliver(
        net,
        priority="urgent",
        ack_by=NOW + 3_600_000,
        handling=["no-onward-sharing"],
        attachments=[PHOTO],
    )
    assert await inbox.received.store(opened, token, received_at=NOW + 2000) is True
    msg = await inbox.received.get(opened.header.id)
    assert msg is not None
    assert msg.id == opened.header.id
    assert msg.sender == "it-tpc"
    assert msg.to == ("fr-oclcc",)
    assert msg.role == "to"
    assert msg.priority == "urgent"
    assert msg.created == NOW
    assert msg.expires == opened.header.expires
    assert msg.ack_by == NOW + 3_600_000
    assert msg.received_at == NOW + 2000
    assert msg.handling == ("no-onward-sharing",)
    assert msg.kind == "identification_notice"
    assert msg.content == NOTICE
    assert msg.attachments == (PHOTO,)
    assert msg.envelope_hash == opened.hash
    assert msg.token == token
    assert msg.state == "new"
    assert (msg.acknowledged_by, msg.acknowledged_at, msg.rejected_reason, msg.decided_at) == (
        None,
        None,
        None,
        None,
    )
    notice = msg.notice
    assert isinstance(notice, IdentificationNotice)
    assert notice.sale_deadline == NOW + 36_000_000


async def test_fallback_role_is_recorded(net: Network, inbox: Inbox) -> None:
    opened, token = deliver(net, fallback=["fr-desk"], reader="fr-desk")
    await inbox.received.store(opened, token, received_at=NOW)
    msg = await inbox.received.get(opened.header.id)
    assert msg is not None and msg.role == "fallback" and msg.to == ("fr-oclcc",)


async def test_invalid_content_is_stored_but_has_no_notice(net: Network, inbox: Inbox) -> None:
    opened, token = deliver(net, {"kind": "gossip", "text": "x"})
    assert await inbox.received.store(opened, token, received_at=NOW) is True
    msg = await inbox.received.get(opened.header.id)
    assert msg is not None
    assert (
        msg.kind == "gossip"
        and msg.notice is None
        and msg.content == {"kind": "gossip", "text": "x"}
    )


async def test_a_token_that_is_not_the_opened_envelope_is_refused(
    net: Network, inbox: Inbox
) -> None:
    opened, _ = deliver(net)
    _, other = deliver(net)
    with pytest.raises(InboxError, match="not the envelope"):
        await inbox.received.store(opened, other, received_at=NOW)
    assert await inbox.received.get(opened.header.id) is None


# --- dedupe ------------------------------------------------------------------------------


async def test_same_message_twice_is_stored_once(net: Network, inbox: Inbox) -> None:
    opened, token = deliver(net)
    assert await inbox.received.store(opened, token, received_at=NOW) is True
    await inbox.received.mark_acknowledged(opened.header.id, person="Lt. Rossi", at=NOW + 5)
    # The relay redelivers (at-least-once): no second copy, and the decision stands.
    assert await inbox.received.store(opened, token, received_at=NOW + 10) is False
    messages = await inbox.received.list()
    assert [m.id for m in messages] == [opened.header.id]
    assert messages[0].state == "acknowledged"
    assert messages[0].received_at == NOW


async def test_store_many_dedupes_inside_and_across_batches(net: Network, inbox: Inbox) -> None:
    a, b, c = deliver(net), deliver(net), deliver(net)
    assert await inbox.received.store_many([a, b, a], received_at=NOW) == [True, True, False]
    assert await inbox.received.store_many([b, c, c], received_at=NOW + 1) == [False, True, False]
    ids = {m.id for m in await inbox.received.list()}
    assert ids == {a[0].header.id, b[0].header.id, c[0].header.id}
    assert len(await inbox.received.list()) == 3


async def test_store_many_is_all_or_nothing(net: Network, inbox: Inbox) -> None:
    a, b = deliver(net), deliver(net)
    broken = (b[0], a[1])  # the token of another envelope
    with pytest.raises(InboxError, match="not the envelope that was opened"):
        await inbox.received.store_many([a, broken], received_at=NOW)
    assert await inbox.received.list() == []
    assert await inbox.received.store_many([a, b], received_at=NOW) == [True, True]


# --- durability --------------------------------------------------------------------------


async def test_everything_survives_close_and_reopen(net: Network, tmp_path: Path) -> None:
    path = tmp_path / "daemon" / "inbox.db"
    (opened, token), (other, other_token) = deliver(net), deliver(net)
    box = await Inbox.open(path)
    await box.received.store_many(
        [(opened, token), (other, other_token)], received_at=NOW, hooks=["archive"]
    )
    await box.received.mark_rejected(other.header.id, reason="not our competence", at=NOW + 1)
    await box.sent.record(
        "01890a5d-ac96-774b-bcce-b302099a8057",
        to=["de-bka"],
        envelope_hash="cd" * 32,
        created=NOW,
        priority="high",
        summary="MLA request",
    )
    await box.close()
    await box.close()  # idempotent

    box = await Inbox.open(path)
    try:
        msg = await box.received.get(opened.header.id)
        assert msg is not None and msg.content == NOTICE and msg.state == "new"
        rejected = await box.received.get(other.header.id)
        assert rejected is not None and rejected.state == "rejected"
        assert rejected.rejected_reason == "not our competence"
        assert [s.summary for s in await box.sent.list()] == ["MLA request"]
        assert len(await box.hook_jobs.due(NOW)) == 2
        # Still deduplicating after the restart.
        assert await box.received.store(opened, token, received_at=NOW + 5) is False
    finally:
        await box.close()


async def test_schema_version_is_recorded_and_a_newer_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    box = await Inbox.open(path)
    assert await box.schema_version() == SCHEMA_VERSION
    await box.close()
    assert await _query(path, "SELECT version FROM version") == [(SCHEMA_VERSION,)]
    assert await _query(path, "PRAGMA journal_mode") == [("wal",)]

    reopened = await Inbox.open(path)  # opening again does not re-run migrations
    assert await reopened.schema_version() == SCHEMA_VERSION
    await reopened.close()
    assert await _query(path, "SELECT COUNT(*) FROM version") == [(1,)]

    def bump() -> None:
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("UPDATE version SET version = ?", (SCHEMA_VERSION + 1,))
        conn.close()

    await asyncio.to_thread(bump)
    with pytest.raises(InboxSchemaError, match="newer than this software"):
        await Inbox.open(path)


async def test_database_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    box = await Inbox.open(path)
    await box.close()
    mode = (await asyncio.to_thread(os.stat, path)).st_mode
    assert stat.S_IMODE(mode) == 0o600


async def test_a_closed_inbox_refuses_calls(tmp_path: Path) -> None:
    box = await Inbox.open(tmp_path / "inbox.db")
    await box.close()
    with pytest.raises(InboxError, match="closed"):
        await box.received.list()


async def test_a_file_that_is_not_a_database_is_an_inbox_error(tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    await asyncio.to_thread(path.write_bytes, b"this is not sqlite" * 100)
    with pytest.raises(InboxError, match=r"cannot open the inbox at .*: file is not a database"):
        await Inbox.open(path)


# --- listing and decisions ---------------------------------------------------------------


async def test_list_is_newest_first_with_limit_and_state(net: Network, inbox: Inbox) -> None:
    ids = []
    for i in range(5):
        opened, token = deliver(net, now=NOW + i)
        await inbox.received.store(opened, token, received_at=NOW + 100 * i)
        ids.append(opened.header.id)
    assert [m.id for m in await inbox.received.list()] == ids[::-1]
    assert [m.id for m in await inbox.received.list(limit=2)] == ids[:-3:-1]
    await inbox.received.mark_acknowledged(ids[1], person="Lt. Rossi", at=NOW + 1000)
    assert [m.id for m in await inbox.received.list(state="acknowledged")] == [ids[1]]
    assert len(await inbox.received.list(state="new")) == 4
    with pytest.raises(InboxError, match="unknown message state"):
        await inbox.received.list(state="lost")  # type: ignore[arg-type]


async def test_acknowledge_records_who_and_when_once(net: Network, inbox: Inbox) -> None:
    opened, token = deliver(net)
    msg_id = opened.header.id
    await inbox.received.store(opened, token, received_at=NOW)
    msg = await inbox.received.mark_acknowledged(msg_id, person="Capt. Dupont", at=NOW + 60_000)
    assert msg.state == "acknowledged"
    assert (msg.acknowledged_by, msg.acknowledged_at, msg.decided_at) == (
        "Capt. Dupont",
        NOW + 60_000,
        NOW + 60_000,
    )
    with pytest.raises(AlreadyDecidedError, match="already acknowledged"):
        await inbox.received.mark_acknowledged(msg_id, person="Someone else", at=NOW + 70_000)
    with pytest.raises(AlreadyDecidedError):
        await inbox.received.mark_rejected(msg_id, reason="too late", at=NOW + 70_000)
    stored = await inbox.received.get(msg_id)
    assert stored is not None and stored.acknowledged_by == "Capt. Dupont"
    assert stored.rejected_reason is None


async def test_reject_is_final(net: Network, inbox: Inbox) -> None:
    opened, token = deliver(net)
    msg_id = opened.header.id
    await inbox.received.store(opened, token, received_at=NOW)
    msg = await inbox.received.mark_rejected(msg_id, reason="outside our competence", at=NOW + 5)
    assert (msg.state, msg.rejected_reason, msg.decided_at) == (
        "rejected",
        "outside our competence",
        NOW + 5,
    )
    with pytest.raises(AlreadyDecidedError, match="already rejected"):
        await inbox.received.mark_acknowledged(msg_id, person="Lt. Rossi", at=NOW + 6)


async def test_deciding_unknown_or_with_bad_input_is_refused(net: Network, inbox: Inbox) -> None:
    unknown = "01890a5d-ac96-774b-bcce-b302099a8057"
    with pytest.raises(UnknownMessageError):
        await inbox.received.mark_acknowledged(unknown, person="Lt. Rossi", at=NOW)
    with pytest.raises(UnknownMessageError):
        await inbox.received.mark_rejected(unknown, reason="no", at=NOW)
    opened, token = deliver(net)
    await inbox.received.store(opened, token, received_at=NOW)
    with pytest.raises(InboxError, match="person"):
        await inbox.received.mark_acknowledged(opened.header.id, person="", at=NOW)
    with pytest.raises(InboxError, match="reason"):
        await inbox.received.mark_rejected(opened.header.id, reason="x" * 501, at=NOW)
    msg = await inbox.received.get(opened.header.id)
    assert msg is not None and msg.state == "new"


# --- the sender side ---------------------------------------------------------------------


async def test_sent_messages_and_their_receipt_timeline(net: Network, inbox: Inbox) -> None:
    sealed = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW)
    assert await inbox.sent.record(
        sealed.id,
        to=["fr-oclcc"],
        envelope_hash=sealed.hash,
        created=NOW,
        priority="urgent",
        summary="Identification: Etruscan bronze mirror",
    )
    # Recording it again (a retried send) is fine; as another envelope it is not.
    assert not await inbox.sent.record(
        sealed.id,
        to=["fr-oclcc"],
        envelope_hash=sealed.hash,
        created=NOW,
        priority="urgent",
        summary="again",
    )
    with pytest.raises(InboxError, match="another envelope"):
        await inbox.sent.record(
            sealed.id,
            to=["fr-oclcc"],
            envelope_hash="00" * 32,
            created=NOW,
            priority="urgent",
            summary="x",
        )

    def receipt(signer: str, status: Any, at: int) -> str:
        ident = net.relay if signer == "relay-eu" else net[signer]
        return sign_receipt(
            ident, msg_id=sealed.id, envelope_hash=sealed.hash, status=status, now=at
        )

    accepted = receipt("relay-eu", "accepted", NOW + 10)
    delivered = receipt("fr-oclcc", "delivered", NOW + 20)
    acknowledged = receipt("fr-oclcc", "acknowledged", NOW + 30)
    # Out of order, and one twice: the timeline is by time, each receipt once.
    for token, status, signer, at in [
        (delivered, "delivered", "fr-oclcc", NOW + 20),
        (acknowledged, "acknowledged", "fr-oclcc", NOW + 30),
        (accepted, "accepted", "relay-eu", NOW + 10),
    ]:
        new = await inbox.sent.record_receipt(sealed.id, token, status=status, signer=signer, at=at)
        assert new is True
    again = await inbox.sent.record_receipt(
        sealed.id, delivered, status="delivered", signer="fr-oclcc", at=NOW + 20
    )
    assert again is False
    timeline = await inbox.sent.timeline(sealed.id)
    assert [(r.status, r.signer, r.at) for r in timeline] == [
        ("accepted", "relay-eu", NOW + 10),
        ("delivered", "fr-oclcc", NOW + 20),
        ("acknowledged", "fr-oclcc", NOW + 30),
    ]
    assert timeline[0].token == accepted
    [sent] = await inbox.sent.list()
    assert (sent.id, sent.to, sent.priority, sent.summary) == (
        sealed.id,
        ("fr-oclcc",),
        "urgent",
        "Identification: Etruscan bronze mirror",
    )
    assert (sent.last_status, sent.last_status_at) == ("acknowledged", NOW + 30)
    assert await inbox.sent.timeline("01890a5d-ac96-774b-bcce-b302099a8057") == []


async def test_receipts_are_recorded_together_in_one_transaction(
    net: Network, inbox: Inbox
) -> None:
    sealed = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW)
    await inbox.sent.record(
        sealed.id,
        to=["fr-oclcc"],
        envelope_hash=sealed.hash,
        created=NOW,
        priority="urgent",
        summary="x",
    )
    other = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW)

    def receipt(msg: Any, status: Any, at: int) -> tuple[str, str, str, str, int, str]:
        token = sign_receipt(
            net["fr-oclcc"], msg_id=msg.id, envelope_hash=msg.hash, status=status, now=at
        )
        return (msg.id, token, status, "fr-oclcc", at, msg.hash)

    delivered, acked = (
        receipt(sealed, "delivered", NOW + 1),
        receipt(sealed, "acknowledged", NOW + 2),
    )
    unrecorded = receipt(other, "delivered", NOW + 3)  # a receipt may overtake the record
    wrong = (*delivered[:5], "0" * 64)  # about another envelope than the one recorded
    assert await inbox.sent.record_receipts([delivered, acked, delivered, unrecorded, wrong]) == [
        True,
        True,
        False,
        True,
        None,
    ]
    assert [r.status for r in await inbox.sent.timeline(sealed.id)] == ["delivered", "acknowledged"]
    assert await inbox.sent.record_receipts([]) == []


async def test_sent_is_newest_first(inbox: Inbox) -> None:
    for i, msg_id in enumerate(
        ["01890a5d-ac96-774b-bcce-b302099a8057", "01890a5d-ac96-774b-bcce-b302099a8058"]
    ):
        await inbox.sent.record(
            msg_id,
            to=["de-bka"],
            envelope_hash=f"{i:02d}" * 32,
            created=NOW + i,
            priority="routine",
            summary=f"m{i}",
        )
    sent = await inbox.sent.list(limit=10)
    assert [s.summary for s in sent] == ["m1", "m0"]
    assert sent[0].last_status is None
    assert len(await inbox.sent.list(limit=1)) == 1


# --- hook jobs ---------------------------------------------------------------------------


async def test_hook_jobs_are_created_with_the_message_and_only_once(
    net: Network, inbox: Inbox
) -> None:
    opened, token = deliver(net)
    msg_id = opened.header.id
    await inbox.received.store(opened, token, received_at=NOW, hooks=["archive", "case-system"])
    assert await inbox.hook_jobs.due(NOW - 1) == []
    due = await inbox.hook_jobs.due(NOW)
    assert {(j.msg_id, j.hook, j.state, j.attempts) for j in due} == {
        (msg_id, "archive", "pending", 0),
        (msg_id, "case-system", "pending", 0),
    }
    assert [j.hook for j in await inbox.hook_jobs.due(NOW, hooks=["archive"])] == ["archive"]
    assert await inbox.hook_jobs.due(NOW, hooks=[]) == []
    # A redelivery creates no new jobs.
    await inbox.received.store(opened, token, received_at=NOW + 1, hooks=["archive", "other"])
    assert len(await inbox.hook_jobs.of_message(msg_id)) == 2


async def test_finish_hook_moves_a_job_through_its_states(net: Network, inbox: Inbox) -> None:
    opened, token = deliver(net)
    msg_id = opened.header.id
    await inbox.received.store(opened, token, received_at=NOW, hooks=["a", "b", "c"])

    job = await inbox.hook_jobs.finish(
        msg_id, "a", ok=False, error="exit 1", next_attempt_at=NOW + 2000
    )
    assert (job.state, job.attempts, job.next_attempt_at, job.last_error) == (
        "pending",
        1,
        NOW + 2000,
        "exit 1",
    )
    assert [j.hook for j in await inbox.hook_jobs.due(NOW + 1999)] == ["b", "c"]
    assert [j.hook for j in await inbox.hook_jobs.due(NOW + 2000)] == ["b", "c", "a"]
    job = await inbox.hook_jobs.finish(msg_id, "a", ok=True, error=None, next_attempt_at=None)
    assert (job.state, job.attempts, job.next_attempt_at) == ("done", 2, None)

    job = await inbox.hook_jobs.finish(
        msg_id, "b", ok=False, error="HTTP 500", next_attempt_at=None
    )
    assert (job.state, job.attempts, job.last_error) == ("failed", 1, "HTTP 500")

    job = await inbox.hook_jobs.finish(
        msg_id, "c", ok=False, error=None, next_attempt_at=None, skipped="no-onward-sharing"
    )
    assert (job.state, job.attempts, job.skipped_reason) == ("skipped", 0, "no-onward-sharing")

    assert await inbox.hook_jobs.due(NOW + 10**9) == []
    with pytest.raises(InboxError, match="not pending"):
        await inbox.hook_jobs.finish(msg_id, "a", ok=True, error=None, next_attempt_at=None)
    with pytest.raises(InboxError, match="no job"):
        await inbox.hook_jobs.finish(msg_id, "zzz", ok=True, error=None, next_attempt_at=None)


async def test_schedule_hooks_adds_missing_jobs(net: Network, inbox: Inbox) -> None:
    opened, token = deliver(net)
    msg_id = opened.header.id
    await inbox.received.store(opened, token, received_at=NOW, hooks=["a"])
    assert await inbox.hook_jobs.schedule(msg_id, ["a", "b"], at=NOW + 5) == 1
    assert [(j.hook, j.next_attempt_at) for j in await inbox.hook_jobs.of_message(msg_id)] == [
        ("a", NOW),
        ("b", NOW + 5),
    ]
    with pytest.raises(UnknownMessageError):
        await inbox.hook_jobs.schedule("01890a5d-ac96-774b-bcce-b302099a8057", ["a"])


# --- attachments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/etc/passwd", "..", ".hidden", "a\\b", "a/b.jpg", "x" * 200, "é" * 200],
)
async def test_attachment_paths_stay_inside_the_message_folder(inbox: Inbox, name: str) -> None:
    msg_id = "01890a5d-ac96-774b-bcce-b302099a8057"
    path = inbox.attachment_path(msg_id, name)
    assert path.parent == inbox.path.parent / "attachments" / msg_id
    assert path.name not in ("", ".", "..") and not path.name.startswith(".")
    assert len(path.name.encode()) <= 255


async def test_attachment_paths_keep_safe_names_and_never_collide(inbox: Inbox) -> None:
    msg_id = "01890a5d-ac96-774b-bcce-b302099a8057"
    assert inbox.attachment_path(msg_id, "front photo.jpg").name == "front photo.jpg"
    assert inbox.attachment_path(msg_id, "a/b.jpg") != inbox.attachment_path(msg_id, "a_b.jpg")
    assert inbox.attachment_path(msg_id, "a/b.jpg").suffix == ".jpg"
    with pytest.raises(InboxError, match="not a message id"):
        inbox.attachment_path("../x", "a.jpg")
