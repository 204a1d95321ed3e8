"""The ``Store`` contract (relay/store/base.py), run against every backend.

Each backend (memory, SQLite, Redis) is one entry of ``FACTORIES`` in
tests/storefixture.py; everything in the generic part must pass unchanged on each, except
that the memory store, which is not durable, skips the close-and-reopen test. The
SQLite-specific part at the end checks its group commit from the inside.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from keys.encoding import uuid7
from relay.store.base import (
    MessageRecord,
    NewMessage,
    QueueItem,
    Store,
    StoreError,
)
from relay.store.sqlite import SQLiteStore
from tests.netfixture import NOW
from tests.storefixture import DURABLE, FACTORIES, message, opened, receipt


@pytest.fixture(params=list(FACTORIES))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def where(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
async def store(backend: str, where: Path) -> AsyncIterator[Store]:
    async with opened(backend, where) as s:
        yield s


def ids(items: list[QueueItem]) -> list[str]:
    return [i.msg_id for i in items]


def same_message(record: MessageRecord | None, m: NewMessage, state: str = "accepted") -> None:
    assert record is not None
    assert record == MessageRecord(
        id=m.id,
        sender=m.sender,
        to=m.to,
        fallbacks=m.fallbacks,
        envelope=m.envelope,
        env_hash=m.env_hash,
        created=m.created,
        expires=m.expires,
        priority=m.priority,
        ack_by=m.ack_by,
        accepted_at=m.accepted_at,
        accepted_receipt=m.accepted_receipt,
        state=state,  # type: ignore[arg-type]
        attachments=m.attachments,
    )


async def test_factory_builds_a_store(store: Store) -> None:
    assert isinstance(store, Store)
    await store.ping()


# --- accept -------------------------------------------------------------------------------


async def test_accept_new_message(store: Store) -> None:
    m = message(to=("fr-oclcc", "de-bka"), fallbacks=("fr-desk",), attachments=("ab" * 32,))
    (res,) = await store.accept([m])
    assert (res.id, res.outcome, res.receipt) == (m.id, "accepted", m.accepted_receipt)
    same_message(await store.get_message(m.id), m)
    assert await store.get_message(uuid7(ms=NOW)) is None


async def test_same_id_and_hash_is_a_duplicate_with_the_original_receipt(store: Store) -> None:
    m = message()
    await store.accept([m])
    # The relay re-signs an accepted receipt each time; the original one is kept.
    resent = NewMessage(**{**_fields(m), "accepted_receipt": "another.receipt.sig"})
    (res,) = await store.accept([resent])
    assert (res.outcome, res.receipt) == ("duplicate", m.accepted_receipt)
    same_message(await store.get_message(m.id), m)
    assert ids(await store.pending("fr-oclcc", after=0, limit=10)) == [m.id]


async def test_same_id_other_hash_is_a_conflict(store: Store) -> None:
    m = message()
    await store.accept([m])
    other = message(msg_id=m.id, to=("de-bka",))
    (res,) = await store.accept([other])
    assert (res.id, res.outcome, res.receipt) == (m.id, "conflict", None)
    same_message(await store.get_message(m.id), m)
    assert await store.pending("de-bka", after=0, limit=10) == []
    assert len(await store.pending("fr-oclcc", after=0, limit=10)) == 1


async def test_batch_accept_gives_one_result_per_message_in_order(store: Store) -> None:
    old = message()
    await store.accept([old])
    a, b = message(), message(to=("de-bka",))
    conflicting = message(msg_id=a.id)
    batch = [a, old, b, a, conflicting]
    results = await store.accept(batch)
    assert [(r.id, r.outcome) for r in results] == [
        (a.id, "accepted"),
        (old.id, "duplicate"),
        (b.id, "accepted"),
        (a.id, "duplicate"),
        (a.id, "conflict"),
    ]
    assert results[3].receipt == a.accepted_receipt and results[4].receipt is None
    same_message(await store.get_message(a.id), a)
    same_message(await store.get_message(b.id), b)
    assert ids(await store.pending("fr-oclcc", after=0, limit=10)) == [old.id, a.id]


async def test_batch_accept_is_visible_all_at_once(store: Store) -> None:
    batch = [message() for _ in range(20)]
    seen: list[int] = []

    async def watch() -> None:
        while len(seen) == 0 or seen[-1] < len(batch):
            seen.append(len(await store.pending("fr-oclcc", after=0, limit=100)))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await store.accept(batch)
    await asyncio.wait_for(watcher, 10)
    assert set(seen) <= {0, len(batch)}


async def test_accepted_messages_are_queued_for_each_to_recipient_in_order(store: Store) -> None:
    m1 = message(to=("fr-oclcc", "de-bka"), fallbacks=("fr-desk",), at=NOW)
    m2 = message(to=("fr-oclcc",), at=NOW + 10)
    m3 = message(to=("de-bka",), fallbacks=("fr-oclcc",), at=NOW + 20)
    await store.accept([m1])
    await store.accept([m2, m3])
    fr = await store.pending("fr-oclcc", after=0, limit=10)
    assert ids(fr) == [m1.id, m2.id]
    assert ids(await store.pending("de-bka", after=0, limit=10)) == [m1.id, m3.id]
    # Fallbacks get nothing until escalation puts it in their queue.
    assert await store.pending("fr-desk", after=0, limit=10) == []
    first = fr[0]
    assert first == QueueItem(
        seq=first.seq,
        recipient="fr-oclcc",
        type="envelope",
        msg_id=m1.id,
        payload=m1.envelope,
        enqueued_at=m1.accepted_at,
        reminder=False,
    )
    assert fr[1].payload == m2.envelope and fr[1].enqueued_at == NOW + 10


async def test_pending_after_and_limit(store: Store) -> None:
    msgs = [message(at=NOW + i) for i in range(5)]
    for m in msgs:
        await store.accept([m])
    everything = await store.pending("fr-oclcc", after=0, limit=100)
    seqs = [i.seq for i in everything]
    assert ids(everything) == [m.id for m in msgs]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert ids(await store.pending("fr-oclcc", after=0, limit=2)) == [m.id for m in msgs[:2]]
    assert ids(await store.pending("fr-oclcc", after=seqs[1], limit=100)) == [
        m.id for m in msgs[2:]
    ]
    assert ids(await store.pending("fr-oclcc", after=seqs[1], limit=1)) == [msgs[2].id]
    assert await store.pending("fr-oclcc", after=seqs[-1], limit=100) == []
    assert await store.pending("nobody", after=0, limit=100) == []


async def test_ack_removes_only_the_named_items_of_that_recipient(store: Store) -> None:
    shared = message(to=("fr-oclcc", "de-bka"))
    own = message(to=("fr-oclcc",))
    await store.accept([shared, own])
    fr = await store.pending("fr-oclcc", after=0, limit=10)
    (de,) = await store.pending("de-bka", after=0, limit=10)
    # de-bka cannot remove fr-oclcc's items, even by naming their seqs.
    assert await store.ack("de-bka", [i.seq for i in fr]) == 0
    assert len(await store.pending("fr-oclcc", after=0, limit=10)) == 2
    assert await store.ack("fr-oclcc", [fr[0].seq, 10**12]) == 1
    assert ids(await store.pending("fr-oclcc", after=0, limit=10)) == [own.id]
    assert ids(await store.pending("de-bka", after=0, limit=10)) == [shared.id]
    assert await store.ack("fr-oclcc", [fr[0].seq]) == 0  # already gone
    assert await store.ack("fr-oclcc", []) == 0
    assert await store.ack("de-bka", [de.seq]) == 1
    # Acknowledging a queue item never touches the message itself.
    same_message(await store.get_message(shared.id), shared)


# --- receipts -------------------------------------------------------------------------------


async def test_add_receipt_is_idempotent_and_queued_for_notify(store: Store) -> None:
    m = message()
    await store.accept([m])
    r = receipt(m)
    assert await store.add_receipt(r, notify="it-tpc") is True
    # Same message, signer and status: a repeat, even with another token.
    assert await store.add_receipt(receipt(m), notify="it-tpc") is False
    assert await store.add_receipt(r, notify="it-tpc") is False
    (item,) = await store.pending("it-tpc", after=0, limit=10)
    assert item == QueueItem(
        seq=item.seq,
        recipient="it-tpc",
        type="receipt",
        msg_id=m.id,
        payload=r.token,
        enqueued_at=r.received_at,
        reminder=False,
    )
    assert await store.receipts(m.id) == [r]
    # Another status by the same signer is a new receipt.
    ack = receipt(m, status="acknowledged")
    assert await store.add_receipt(ack, notify="it-tpc") is True
    assert [i.payload for i in await store.pending("it-tpc", after=0, limit=10)] == [
        r.token,
        ack.token,
    ]


async def _state(store: Store, msg_id: str) -> str:
    record = await store.get_message(msg_id)
    assert record is not None
    return record.state


async def test_state_moves_forward_only(store: Store) -> None:
    m = message(to=("fr-oclcc", "de-bka"))
    await store.accept([m])
    assert await _state(store, m.id) == "accepted"
    await store.add_receipt(receipt(m, "fr-oclcc", "delivered"), notify="it-tpc")
    assert await _state(store, m.id) == "delivered"
    await store.add_receipt(receipt(m, "fr-oclcc", "acknowledged"), notify="it-tpc")
    assert await _state(store, m.id) == "acknowledged"
    # A later delivered (by the other recipient) does not move it back.
    await store.add_receipt(receipt(m, "de-bka", "delivered"), notify="it-tpc")
    assert await _state(store, m.id) == "acknowledged"
    # Every receipt is still recorded and forwarded, whatever the state does.
    assert len(await store.receipts(m.id)) == 3
    assert len(await store.pending("it-tpc", after=0, limit=10)) == 3


async def test_acknowledged_straight_from_accepted(store: Store) -> None:
    m = message()
    await store.accept([m])
    await store.add_receipt(receipt(m, status="acknowledged"), notify="it-tpc")
    assert await _state(store, m.id) == "acknowledged"
    await store.add_receipt(receipt(m, status="delivered"), notify="it-tpc")
    assert await _state(store, m.id) == "acknowledged"


@pytest.mark.parametrize("before", [[], ["delivered"]])
async def test_rejected_is_terminal(store: Store, before: list[str]) -> None:
    m = message(to=("fr-oclcc", "de-bka"))
    await store.accept([m])
    for status in before:
        await store.add_receipt(receipt(m, "de-bka", status), notify="it-tpc")
    await store.add_receipt(receipt(m, "fr-oclcc", "rejected"), notify="it-tpc")
    assert await _state(store, m.id) == "rejected"
    for signer in ("fr-oclcc", "de-bka"):
        for status in ("delivered", "acknowledged"):
            await store.add_receipt(receipt(m, signer, status), notify="it-tpc")
    assert await _state(store, m.id) == "rejected"


async def test_receipts_in_the_order_received(store: Store) -> None:
    m, other = message(to=("fr-oclcc", "de-bka")), message()
    await store.accept([m, other])
    added = [
        receipt(m, "de-bka", "delivered", at=NOW + 30),
        receipt(m, "fr-oclcc", "delivered", at=NOW + 10),
        receipt(other, "fr-oclcc", "delivered"),
        receipt(m, "fr-oclcc", "acknowledged", at=NOW + 20),
    ]
    for r in added:
        await store.add_receipt(r, notify="it-tpc")
    assert await store.receipts(m.id) == [added[0], added[1], added[3]]
    assert await store.receipts(other.id) == [added[2]]
    assert await store.receipts(uuid7(ms=NOW)) == []


# --- queue statistics ------------------------------------------------------------------------


async def test_queue_stats_and_depth(store: Store) -> None:
    assert await store.queue_stats() == []
    await store.accept([message(to=("fr-oclcc", "de-bka"), at=NOW + 100)])
    await store.accept([message(to=("fr-oclcc",), at=NOW + 50)])
    stats = {s.recipient: s for s in await store.queue_stats()}
    assert set(stats) == {"fr-oclcc", "de-bka"}
    assert (stats["fr-oclcc"].depth, stats["fr-oclcc"].oldest_enqueued_at) == (2, NOW + 50)
    assert (stats["de-bka"].depth, stats["de-bka"].oldest_enqueued_at) == (1, NOW + 100)
    assert await store.depth("fr-oclcc") == 2 and await store.depth("nobody") == 0
    (de,) = await store.pending("de-bka", after=0, limit=10)
    await store.ack("de-bka", [de.seq])
    assert [s.recipient for s in await store.queue_stats()] == ["fr-oclcc"]
    assert await store.depth("de-bka") == 0


# --- attachments -----------------------------------------------------------------------------


async def test_attachments_metadata_and_read_access(store: Store) -> None:
    photo, other = "a1" * 32, "b2" * 32
    assert await store.attachment_uploader(photo) is None
    assert await store.may_read_attachment(photo, "it-tpc") is False
    assert await store.put_attachment(photo, uploader="it-tpc", size=1234, at=NOW) is True
    assert await store.put_attachment(photo, uploader="de-bka", size=1234, at=NOW) is False
    assert await store.put_attachment(other, uploader="it-tpc", size=10, at=NOW) is True
    assert await store.attachment_uploader(photo) == "it-tpc"
    # Before any message references it, only the uploader may read it.
    assert await store.may_read_attachment(photo, "it-tpc") is True
    assert await store.may_read_attachment(photo, "de-bka") is False  # a later uploader
    assert await store.may_read_attachment(photo, "fr-oclcc") is False
    await store.accept([message(to=("fr-oclcc",), fallbacks=("fr-desk",), attachments=(photo,))])
    for aid in ("it-tpc", "fr-oclcc", "fr-desk"):
        assert await store.may_read_attachment(photo, aid) is True, aid
    for aid in ("de-bka", "fr-ca"):
        assert await store.may_read_attachment(photo, aid) is False, aid
    # Being a recipient of one attachment's message gives no access to another.
    assert await store.may_read_attachment(other, "fr-oclcc") is False
    # A message referencing an attachment nobody uploaded gives access to nothing.
    ghost = "c3" * 32
    await store.accept([message(to=("de-bka",), attachments=(ghost,))])
    assert await store.may_read_attachment(ghost, "de-bka") is False


# --- durability and concurrency ------------------------------------------------------------------


async def test_everything_survives_close_and_reopen(backend: str, where: Path) -> None:
    if backend not in DURABLE:
        pytest.skip(f"the {backend} store is not durable: a reopen starts empty by design")
    kept, acked = message(to=("fr-oclcc", "de-bka")), message()
    photo = "d4" * 32
    async with opened(backend, where) as store:
        await store.accept([kept, acked])
        r = receipt(kept, "de-bka", "delivered")
        await store.add_receipt(r, notify="it-tpc")
        fr = await store.pending("fr-oclcc", after=0, limit=10)
        await store.ack("fr-oclcc", [fr[-1].seq])  # the newest seq
        await store.put_attachment(photo, uploader="it-tpc", size=99, at=NOW)
        before = (
            await store.pending("fr-oclcc", after=0, limit=10),
            await store.pending("de-bka", after=0, limit=10),
            await store.pending("it-tpc", after=0, limit=10),
            sorted(await store.queue_stats(), key=lambda s: s.recipient),
        )
    async with opened(backend, where) as store:
        same_message(await store.get_message(kept.id), kept, "delivered")
        same_message(await store.get_message(acked.id), acked)
        assert await store.receipts(kept.id) == [r]
        after = (
            await store.pending("fr-oclcc", after=0, limit=10),
            await store.pending("de-bka", after=0, limit=10),
            await store.pending("it-tpc", after=0, limit=10),
            sorted(await store.queue_stats(), key=lambda s: s.recipient),
        )
        assert after == before
        assert await store.attachment_uploader(photo) == "it-tpc"
        assert await store.may_read_attachment(photo, "it-tpc")
        # Duplicate detection and idempotency survive too.
        (dup,) = await store.accept([kept])
        assert (dup.outcome, dup.receipt) == ("duplicate", kept.accepted_receipt)
        assert await store.add_receipt(r, notify="it-tpc") is False
        # Sequence numbers are never reused, even the acknowledged newest one.
        new = message()
        await store.accept([new])
        (item,) = [
            i for i in await store.pending("fr-oclcc", after=0, limit=10) if i.msg_id == new.id
        ]
        assert item.seq > fr[-1].seq


async def test_concurrent_accepts_all_commit_with_their_own_results(store: Store) -> None:
    msgs = [message(to=("fr-oclcc",), at=NOW + i) for i in range(60)]
    results = await asyncio.gather(*(store.accept([m]) for m in msgs))
    for m, (res,) in zip(msgs, results, strict=True):
        assert (res.id, res.outcome, res.receipt) == (m.id, "accepted", m.accepted_receipt)
    pending = await store.pending("fr-oclcc", after=0, limit=100)
    assert sorted(ids(pending)) == sorted(m.id for m in msgs)
    # Concurrent duplicates and conflicts each get their own answer too.
    again = await asyncio.gather(
        *(store.accept([m if i % 2 else message(msg_id=m.id)]) for i, m in enumerate(msgs))
    )
    assert [r.outcome for (r,) in again] == ["conflict", "duplicate"] * 30


async def test_concurrent_mixed_writes(store: Store) -> None:
    msgs = [message() for _ in range(20)]
    await store.accept(msgs)
    items = await store.pending("fr-oclcc", after=0, limit=100)
    ops: list[Any] = []
    for m, item in zip(msgs, items, strict=True):
        ops.append(store.add_receipt(receipt(m), notify="it-tpc"))
        ops.append(store.ack("fr-oclcc", [item.seq]))
        ops.append(store.accept([message(to=("de-bka",))]))
    results = await asyncio.gather(*ops)
    assert results[0::3] == [True] * 20
    assert results[1::3] == [1] * 20
    assert await store.pending("fr-oclcc", after=0, limit=100) == []
    assert len(await store.pending("it-tpc", after=0, limit=100)) == 20
    assert len(await store.pending("de-bka", after=0, limit=100)) == 20
    assert {await _state(store, m.id) for m in msgs} == {"delivered"}


async def test_closed_store_refuses_with_a_store_error(backend: str, where: Path) -> None:
    async with opened(backend, where) as store:
        m = message()
        await store.accept([m])
    with pytest.raises(StoreError):
        await store.accept([message()])
    with pytest.raises(StoreError):
        await store.get_message(m.id)
    with pytest.raises(StoreError):
        await store.ping()


# --- SQLite: group commit from the inside ------------------------------------------------------


@pytest.fixture
async def sqlite_store(where: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(where / "relay.sqlite3")
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def test_sqlite_group_commit_batches_concurrent_writes(sqlite_store: SQLiteStore) -> None:
    msgs = [message(at=NOW + i) for i in range(100)]
    before = sqlite_store.commits
    await asyncio.gather(*(sqlite_store.accept([m]) for m in msgs))
    commits = sqlite_store.commits - before
    assert 1 <= commits < len(msgs) // 2, commits
    assert len(await sqlite_store.pending("fr-oclcc", after=0, limit=200)) == 100


class BoomError(Exception):
    pass


async def test_sqlite_failing_op_does_not_spoil_its_group(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    good1, good2, poisoned = message(), message(), message()

    def fails_after_writing(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO queue (recipient, type, msg_id, payload, enqueued_at) "
            "VALUES ('fr-oclcc', 'receipt', ?, 'x', 0)",
            (poisoned.id,),
        )
        raise BoomError("op failed half way")

    def violates_a_constraint(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO attachments (digest) VALUES ('x')")  # NOT NULL columns

    before = store.commits
    results = await asyncio.gather(
        store.accept([good1]),
        store._write(fails_after_writing),
        store._write(violates_a_constraint),
        store.accept([good2]),
        return_exceptions=True,
    )
    assert store.commits - before == 1  # one transaction for the four
    assert isinstance(results[1], BoomError)
    assert isinstance(results[2], sqlite3.IntegrityError)
    assert [r.outcome for r in results[0]] == ["accepted"]  # type: ignore[union-attr]
    assert [r.outcome for r in results[3]] == ["accepted"]  # type: ignore[union-attr]
    pending = await store.pending("fr-oclcc", after=0, limit=10)
    assert ids(pending) == [good1.id, good2.id]  # the half-done write was rolled back
    # And the store goes on working.
    (res,) = await store.accept([message()])
    assert res.outcome == "accepted"


async def test_sqlite_batch_accept_is_atomic(sqlite_store: SQLiteStore) -> None:
    good = message()
    unstorable = NewMessage(**{**_fields(message()), "created": 2**64})  # not an SQLite INTEGER
    with pytest.raises(OverflowError):
        await sqlite_store.accept([good, unstorable])
    assert await sqlite_store.get_message(good.id) is None
    assert await sqlite_store.pending("fr-oclcc", after=0, limit=10) == []
    (res,) = await sqlite_store.accept([good])
    assert res.outcome == "accepted"


def _fields(m: NewMessage) -> dict[str, Any]:
    return {name: getattr(m, name) for name in NewMessage.__slots__}  # type: ignore[attr-defined]


# --- request nonces ----------------------------------------------------------------------


async def test_a_nonce_is_claimed_once_and_remembered_across_a_restart(
    backend: str, where: Path
) -> None:
    expires = NOW // 1000 + 300
    async with opened(backend, where) as store:
        claims = await asyncio.gather(
            store.claim_nonce("nonce-a", expires),
            store.claim_nonce("nonce-a", expires),
            store.claim_nonce("nonce-b", expires),
        )
        assert sorted(claims) == [False, True, True]  # one of the two racing claims wins
        assert await store.claim_nonce("nonce-b", expires) is False
    if backend not in DURABLE:
        return  # the memory store forgets everything at a restart, messages included
    async with opened(backend, where) as store:
        assert await store.claim_nonce("nonce-a", expires) is False
        assert await store.claim_nonce("nonce-c", expires) is True


async def test_sqlite_fsyncs_every_commit_but_those_of_acknowledgements_alone(
    tmp_path: Path,
) -> None:
    """A lost acknowledgement only brings a redelivery: an ack-only commit skips the
    fsync (synchronous=NORMAL); anything else commits with synchronous=FULL."""
    store = SQLiteStore(tmp_path / "relay.sqlite3")
    await store.start()

    async def synchronous() -> int:
        return int(await store._write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]))

    try:
        m = message()
        await store.accept([m])
        (item,) = await store.pending("fr-oclcc", after=0, limit=10)
        assert await synchronous() == 2  # FULL
        assert await store.ack("fr-oclcc", [item.seq]) == 1
        assert store._synchronous == "NORMAL"
        await store.add_receipt(receipt(m), notify="it-tpc")
        assert store._synchronous == "FULL" and await synchronous() == 2
        # Mixed with a durable write in one group commit: FULL.
        (r_item,) = await store.pending("it-tpc", after=0, limit=10)
        await asyncio.gather(store.ack("it-tpc", [r_item.seq]), store.accept([message()]))
        assert store._synchronous == "FULL"
    finally:
        await store.close()
