"""The relay's log in every store: each stored receipt appends one leaf in its commit,
repeats append nothing, the stored subtrees give proofs that verify, and the log
survives a reopen and only grows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from keys.merkle import (
    EMPTY_ROOT,
    Perfect,
    consistency_proof,
    inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from relay.store.base import (
    STEP_REMIND,
    Escalation,
    LogHead,
    ReceiptRecord,
    Store,
    Timer,
    log_leaf,
)
from relay.store.sqlite import SQLiteStore
from tests.netfixture import NOW
from tests.storefixture import DURABLE, FACTORIES, message, opened, receipt


@pytest.fixture(params=list(FACTORIES))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)  # "backend": tests/conftest.py flushes redis for it


@pytest.fixture
async def store(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    async with opened(backend, tmp_path / "store") as s:
        yield s


async def _leaves(store: Store, size: int) -> list[bytes]:
    found = await store.log_nodes([(0, i) for i in range(size)])
    return [found[(0, i)] for i in range(size)]


async def _proofs_verify(store: Store, head: LogHead) -> None:
    keys: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        keys.add((level, index))
        return EMPTY_ROOT

    for i in range(head.size):
        inclusion_proof(i, head.size, record)
    nodes = await store.log_nodes(sorted(keys))
    for i in range(head.size):
        path = inclusion_proof(i, head.size, lambda lv, ix: nodes[(lv, ix)])
        verify_inclusion(nodes[(0, i)], i, head.size, path, head.root)


async def test_every_stored_receipt_is_one_leaf_in_commit_order(store: Store) -> None:
    assert await store.log_head() == LogHead(0, EMPTY_ROOT)
    a, b = message(), message(to=("de-bka",))
    await store.accept([a, b])
    await store.accept([a])  # a duplicate appends nothing
    await store.accept([message(msg_id=a.id)])  # nor does a conflict
    delivered = receipt(a)
    assert await store.add_receipt(delivered, notify="it-tpc")
    assert not await store.add_receipt(receipt(a), notify="it-tpc")  # a repeat: nothing
    acked = receipt(a, status="acknowledged")
    await store.add_receipts([(acked, "it-tpc"), (receipt(b, signer="de-bka"), "it-tpc")])

    head = await store.log_head()
    tokens = [a.accepted_receipt, b.accepted_receipt, delivered.token, acked.token]
    assert head.size == 5
    stored_a, stored_b = await store.get_message(a.id), await store.get_message(b.id)
    assert stored_a is not None and stored_b is not None
    assert (stored_a.log_index, stored_b.log_index) == (0, 1)
    assert [r.log_index for r in await store.receipts(a.id)] == [2, 3]
    leaves = await _leaves(store, head.size)
    assert leaves[:4] == [log_leaf(t) for t in tokens]
    (b_receipt,) = await store.receipts(b.id)
    assert leaves[4] == log_leaf(b_receipt.token)
    assert head.root == root_of(leaves)
    await _proofs_verify(store, head)
    assert await store.log_nodes([(0, head.size), (3, 0)]) == {}  # not (yet) in the log


async def test_a_relay_signed_escalation_receipt_is_logged(store: Store) -> None:
    m = replace(message(), timers=((STEP_REMIND, NOW + 60_000),))
    await store.accept([m])
    before = await store.log_head()
    esc = ReceiptRecord(
        m.id, "escalated", "relay", NOW + 60_000, "escalated.token", NOW + 60_000, 1
    )
    timer = Timer(m.id, STEP_REMIND, NOW + 60_000, 0)
    (seqs,) = await store.fire([Escalation(timer=timer, receipt=esc, sender=m.sender)])
    assert seqs is not None
    after = await store.log_head()
    assert after.size == before.size + 1
    assert (await _leaves(store, after.size))[-1] == log_leaf("escalated.token")
    proof = consistency_proof(before.size, after.size, _sync(await _all_nodes(store, after)))
    verify_consistency(before.size, after.size, before.root, after.root, proof)


async def _all_nodes(store: Store, head: LogHead) -> dict[tuple[int, int], bytes]:
    keys = [(lv, ix) for lv in range(head.size.bit_length()) for ix in range(head.size >> lv)]
    return await store.log_nodes(keys)


def _sync(nodes: dict[tuple[int, int], bytes]) -> Perfect:
    return lambda lv, ix: nodes[(lv, ix)]


async def test_the_log_survives_a_reopen_and_only_grows(backend: str, tmp_path: Path) -> None:
    if backend not in DURABLE:
        pytest.skip("the memory store is not durable: a reopen starts empty by design")
    where = tmp_path / "store"
    async with opened(backend, where) as store:
        for _ in range(3):
            m = message()
            await store.accept([m])
            await store.add_receipt(receipt(m), notify="it-tpc")
        first = await store.log_head()
    async with opened(backend, where) as store:
        assert await store.log_head() == first
        m = message()
        await store.accept([m])
        second = await store.log_head()
        assert second.size == first.size + 1
        nodes = await _all_nodes(store, second)
        proof = consistency_proof(first.size, second.size, _sync(nodes))
        verify_consistency(first.size, second.size, first.root, second.root, proof)
        await _proofs_verify(store, second)


async def test_a_failed_write_in_a_group_commit_leaves_no_leaf(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "relay.sqlite3")
    await store.start()
    try:
        m = message()

        def fails(conn: object) -> None:
            store._log.append(conn, "never.committed.token")  # type: ignore[arg-type]
            raise ValueError("this op fails after appending")

        good = asyncio.ensure_future(store.accept([m]))
        bad = asyncio.ensure_future(store._write(fails))
        other = message()
        later = asyncio.ensure_future(store.accept([other]))
        await good
        with pytest.raises(ValueError):
            await bad
        await later
        head = await store.log_head()
        assert head.size == 2
        leaves = await _leaves(store, 2)
        assert leaves == [log_leaf(m.accepted_receipt), log_leaf(other.accepted_receipt)]
        assert head.root == root_of(leaves)
    finally:
        await store.close()
