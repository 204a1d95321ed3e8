"""Retention (``Store.prune``), run against every backend: closed messages older than the
cut-off go with their receipts, queued envelope copies and timers; open or recent ones
stay; attachments go once no stored message references them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.store.base import NewMessage, Pruned, Store
from tests.netfixture import NOW
from tests.storefixture import DAY, FACTORIES, message, opened, receipt

OLD = NOW - 500 * DAY
CUTOFF = NOW - 400 * DAY


@pytest.fixture(params=list(FACTORIES))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)  # "backend": tests/conftest.py flushes redis for it


@pytest.fixture
async def store(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    async with opened(backend, tmp_path / "store") as s:
        yield s


async def _close(store: Store, m: NewMessage, signer: str = "fr-oclcc") -> None:
    """Delivered then acknowledged by ``signer``: the message is closed."""
    assert await store.add_receipt(receipt(m, signer=signer, at=m.accepted_at + 5), notify="it-tpc")
    ack = receipt(m, signer=signer, status="acknowledged", at=m.accepted_at + 9)
    assert await store.add_receipt(ack, notify="it-tpc")
    record = await store.get_message(m.id)
    assert record is not None and record.state == "acknowledged"


async def test_prune_forgets_old_closed_messages_only(store: Store) -> None:
    old_closed = message(to=("fr-oclcc", "de-bka"), at=OLD)
    old_open = message(to=("de-bka",), at=OLD + 1)
    recent_closed = message(at=NOW)
    await store.accept([old_closed, old_open, recent_closed])
    await _close(store, old_closed)
    await _close(store, recent_closed)
    # Neither recipient read old_closed: the queued copies of its envelope go with it.
    assert {i.msg_id for i in await store.pending("de-bka", after=0, limit=10)} == {
        old_closed.id,
        old_open.id,
    }

    result = await store.prune(CUTOFF, limit=100)

    assert (result.messages, result.receipts, result.queued) == (1, 2, 2)
    assert await store.get_message(old_closed.id) is None
    assert await store.receipts(old_closed.id) == []
    assert [i.msg_id for i in await store.pending("de-bka", after=0, limit=10)] == [old_open.id]
    assert await store.get_message(old_open.id) is not None  # not closed: kept
    assert await store.get_message(recent_closed.id) is not None  # too recent: kept
    assert len(await store.receipts(recent_closed.id)) == 2
    # The receipts queued for the sender carry their own payload: they are still owed.
    owed = await store.pending("it-tpc", after=0, limit=10)
    assert [i.type for i in owed].count("receipt") == 4
    # Nothing left to do: a second run forgets nothing.
    assert await store.prune(CUTOFF, limit=100) == Pruned()


async def test_prune_takes_the_oldest_first_within_the_limit(store: Store) -> None:
    msgs = [message(at=OLD + i) for i in range(5)]
    await store.accept(msgs)
    for m in msgs:
        await _close(store, m)
    first = await store.prune(CUTOFF, limit=2)
    assert first.messages == 2
    assert [await store.get_message(m.id) is None for m in msgs] == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert (await store.prune(CUTOFF, limit=10)).messages == 3
    assert all([await store.get_message(m.id) is None for m in msgs])


async def test_a_message_closed_late_is_pruned_once_closed(store: Store) -> None:
    m = message(at=OLD)
    await store.accept([m])
    assert (await store.prune(CUTOFF, limit=10)).messages == 0
    await _close(store, m)
    # Looked at again once past its expiry (Redis: and at least a day later).
    assert (await store.prune(CUTOFF + DAY + 1, limit=10)).messages == 1
    assert await store.get_message(m.id) is None


async def test_prune_forgets_attachments_no_stored_message_references(store: Store) -> None:
    shared, alone, never_sent, fresh = ("a1" * 32, "b2" * 32, "c3" * 32, "d4" * 32)
    for digest in (shared, alone, never_sent):
        assert await store.put_attachment(digest, uploader="it-tpc", size=10, at=OLD - 10)
    assert await store.put_attachment(fresh, uploader="it-tpc", size=10, at=NOW)
    old = message(at=OLD, attachments=(shared, alone))
    kept = message(at=NOW, to=("de-bka",), attachments=(shared,))
    await store.accept([old, kept])
    await _close(store, old)

    result = await store.prune(CUTOFF, limit=100)

    assert result.messages == 1
    assert sorted(result.attachments) == sorted([alone, never_sent])
    assert await store.attachment_uploader(alone) is None
    assert await store.attachment_uploader(never_sent) is None
    assert await store.may_read_attachment(shared, "de-bka") is True  # still referenced
    assert await store.attachment_uploader(fresh) == "it-tpc"  # uploaded recently
    assert (await store.prune(CUTOFF, limit=100)).attachments == ()
    # Once the last message referencing it is pruned, the shared attachment goes too.
    await _close(store, kept, signer="de-bka")
    later = await store.prune(NOW + 1, limit=100)
    assert later.messages == 1 and shared in later.attachments
    assert await store.attachment_uploader(shared) is None
