"""The Redis store beyond the shared contract: what several instances rely on.

Two ``RedisStore`` objects on one server stand for two relay processes: pushes reach the
other instance in full (and never echo back), a due timer is fired by exactly one of
them, nonces are shared, the consumer group records who delivers what. The durability
checks refuse a server without the AOF; a Redis that goes away makes every call a
``StoreUnavailableError`` and the same store object works again once it is back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import relay.store.redis as redis_store
from relay.store.base import (
    STEP_EXPIRE,
    STEP_RELEASE,
    STEP_REMIND,
    Escalation,
    NewItem,
    NewMessage,
    QueueItem,
    ReceiptRecord,
    StoreUnavailableError,
)
from relay.store.redis import RedisStore, StoreConfigError, durability_plan, parse_version
from tests.netfixture import NOW
from tests.redisfixture import REDIS_SERVER, RedisServer, async_client
from tests.relayfixture import until
from tests.storefixture import message, receipt

MIN = 60_000
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> str:
    await asyncio.to_thread(redis_server.flushall_sync)
    return redis_server.url


@pytest.fixture
async def two(redis_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    a, b = RedisStore(redis_url, instance="relay-a"), RedisStore(redis_url, instance="relay-b")
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


class Inbox:
    """What a store's listener handed to the hub."""

    def __init__(self) -> None:
        self.items: list[QueueItem] = []
        self.resyncs = 0

    def __call__(self, items: list[QueueItem]) -> None:
        if items:
            self.items.extend(items)
        else:
            self.resyncs += 1


async def listening(store: RedisStore, inbox: Inbox) -> asyncio.Task[None]:
    task = asyncio.create_task(store.listen(inbox))

    async def subscribed() -> bool:
        return inbox.resyncs > 0

    await until(subscribed, 5)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def timed(**kw: object) -> NewMessage:
    m = message(fallbacks=("fr-desk",), **kw)  # type: ignore[arg-type]
    return dataclasses.replace(
        m,
        policy='{"priority":"urgent","steps":[[1,1],[2,2],[3,3]]}',
        timers=((STEP_REMIND, NOW + 10 * MIN), (STEP_EXPIRE, m.expires)),
    )


# --- pushes between instances ------------------------------------------------------------


async def test_items_committed_by_one_instance_reach_the_other_in_full(
    two: tuple[RedisStore, RedisStore],
) -> None:
    a, b = two
    at_a, at_b = Inbox(), Inbox()
    tasks = [await listening(a, at_a), await listening(b, at_b)]
    try:
        m = message(to=("fr-oclcc", "de-bka"))
        (res,) = await a.accept([m])
        r = receipt(m)
        (rseq,) = await a.add_receipts([(r, "it-tpc")])

        async def arrived() -> bool:
            return len(at_b.items) == 3

        await until(arrived, 5)
        assert at_b.items == [
            QueueItem(res.queued[0], "fr-oclcc", "envelope", m.id, m.envelope, m.accepted_at),
            QueueItem(res.queued[1], "de-bka", "envelope", m.id, m.envelope, m.accepted_at),
            QueueItem(rseq or 0, "it-tpc", "receipt", m.id, r.token, r.received_at),
        ]
        # The pushed items are exactly what a store read returns.
        assert at_b.items[0] == (await b.pending("fr-oclcc", after=0, limit=10))[0]
        await asyncio.sleep(0.05)
        assert at_a.items == []  # no echo of its own commits
    finally:
        for t in tasks:
            await stop(t)


async def test_escalation_items_are_pushed_with_the_envelope(
    two: tuple[RedisStore, RedisStore],
) -> None:
    a, b = two
    at_b = Inbox()
    task = await listening(b, at_b)
    try:
        m = timed()
        await a.accept([m])
        ((timer, _),) = await a.due_timers(NOW + 10 * MIN, limit=10)
        esc = Escalation(
            timer=timer,
            items=(NewItem("fr-oclcc", "envelope", None, True, "reminder"),),
            receipt=ReceiptRecord(m.id, "escalated", "relay-eu", NOW, "esc", NOW, step=1),
            sender="it-tpc",
        )
        (seqs,) = await a.fire([esc])
        assert seqs is not None

        async def arrived() -> bool:
            return len(at_b.items) == 3

        await until(arrived, 5)
        reminder = at_b.items[1]
        assert (reminder.seq, reminder.payload, reminder.reminder, reminder.note) == (
            seqs[0],
            m.envelope,
            True,
            "reminder",
        )
        assert (at_b.items[2].seq, at_b.items[2].payload) == (seqs[1], "esc")
    finally:
        await stop(task)


async def test_concurrent_writes_are_coalesced_into_few_script_calls(
    two: tuple[RedisStore, RedisStore],
) -> None:
    a, _ = two
    msgs = [message(at=NOW + i) for i in range(100)]
    before = a.commits
    results = await asyncio.gather(*(a.accept([m]) for m in msgs))
    assert [r.id for (r,) in results] == [m.id for m in msgs]
    assert all(r.outcome == "accepted" for (r,) in results)
    assert 1 <= a.commits - before < len(msgs) // 2
    # Each caller got its own seq, in commit order.
    pending = await a.pending("fr-oclcc", after=0, limit=200)
    assert [i.seq for i in pending] == [r.queued[0] for (r,) in results]


# --- timers: one instance fires each -----------------------------------------------------


async def test_a_due_timer_is_leased_to_one_instance(
    two: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    m = timed()
    await a.accept([m])
    assert [t.step for t, _ in await a.due_timers(NOW + 10 * MIN, limit=10)] == [STEP_REMIND]
    assert await b.due_timers(NOW + 10 * MIN, limit=10) == []  # a holds the lease
    # The holder sees it again (its own lease); once the lease lapses, so does the other.
    assert len(await a.due_timers(NOW + 10 * MIN, limit=10)) == 1
    monkeypatch.setattr(redis_store, "LEASE_MS", 50)
    await a.due_timers(NOW + 10 * MIN, limit=10)
    await asyncio.sleep(0.1)
    assert len(await b.due_timers(NOW + 10 * MIN, limit=10)) == 1


async def test_concurrent_firing_of_one_timer_takes_effect_once(
    two: tuple[RedisStore, RedisStore],
) -> None:
    a, b = two
    msgs = [timed(at=NOW + i) for i in range(20)]
    await a.accept(msgs)
    due = await a.due_timers(NOW + 11 * MIN, limit=100)
    assert len(due) == 20
    plans = [
        Escalation(
            timer=t,
            items=(NewItem("fr-oclcc", "envelope", None, True, "reminder"),),
            receipt=ReceiptRecord(t.msg_id, "escalated", "relay-eu", NOW, f"e{t.msg_id}", NOW, 1),
            sender="it-tpc",
            next_timer=(STEP_RELEASE, NOW + 30 * MIN),
        )
        for t, _ in due
    ]
    # Both instances planned the same steps (say, after a lease lapsed) and fire together.
    ra, rb = await asyncio.gather(a.fire(plans), b.fire(plans))
    applied = [x is not None for x in ra] + [x is not None for x in rb]
    assert sum(applied) == 20
    assert all((x is None) != (y is None) for x, y in zip(ra, rb, strict=True))
    reminders = [i for i in await a.pending("fr-oclcc", after=0, limit=1000) if i.reminder]
    assert len(reminders) == 20
    assert len(await a.pending("it-tpc", after=0, limit=1000)) == 20
    # Each message moved on to its next step exactly once.
    nxt = await b.due_timers(NOW + 31 * MIN, limit=100)
    assert sorted(t.step for t, _ in nxt) == [STEP_RELEASE] * 20


async def test_an_acknowledgement_fences_off_a_timer_planned_on_another_instance(
    two: tuple[RedisStore, RedisStore],
) -> None:
    a, b = two
    m = timed()
    await a.accept([m])
    ((timer, _),) = await a.due_timers(NOW + 10 * MIN, limit=10)
    await b.add_receipt(receipt(m, status="acknowledged"), notify="it-tpc")
    late = Escalation(timer=timer, items=(NewItem("fr-oclcc", "envelope", None, True, "r"),))
    assert await a.fire([late]) == [None]
    assert not [i for i in await a.pending("fr-oclcc", after=0, limit=10) if i.reminder]
    assert await a.timer_stats(NOW, overdue_after_ms=1000) == (0, 0, None)


# --- nonces and the delivery ledger --------------------------------------------------------


async def test_a_nonce_is_claimed_once_across_instances(two: tuple[RedisStore, RedisStore]) -> None:
    a, b = two
    assert await a.claim_nonce("n-1", expires_at=2_000_000_000) is True
    assert await b.claim_nonce("n-1", expires_at=2_000_000_000) is False
    assert await a.claim_nonce("n-1", expires_at=2_000_000_000) is False
    assert await b.claim_nonce("n-2", expires_at=2_000_000_000) is True


async def test_the_consumer_group_records_which_instance_delivers(
    two: tuple[RedisStore, RedisStore], redis_url: str
) -> None:
    a, b = two
    await a.accept([message(), message()])
    raw = async_client(redis_url)
    try:
        q = redis_store.qkey("fr-oclcc")
        items = await a.pending("fr-oclcc", after=0, limit=10)
        assert len(items) == 2
        summary = await raw.xpending(q, "relay")
        assert summary["pending"] == 2
        assert [(c["name"], c["pending"]) for c in summary["consumers"]] == [("relay-a", 2)]
        # The daemon reconnects to the other instance: it takes the items over, and the
        # empty consumer of the first is removed.
        await b.pending("fr-oclcc", after=0, limit=10)
        summary = await raw.xpending(q, "relay")
        assert [(c["name"], c["pending"]) for c in summary["consumers"]] == [("relay-b", 2)]
        consumers = await raw.xinfo_consumers(q, "relay")
        assert [c["name"] for c in consumers] == ["relay-b"]
        # Each item was handed to a daemon twice: the delivery counter says so.
        detail = await raw.xpending_range(q, "relay", min="-", max="+", count=10)
        assert [d["times_delivered"] for d in detail] == [2, 2]
        # Acknowledged: gone from the stream and from the group's pending list.
        assert await b.ack("fr-oclcc", [i.seq for i in items]) == 2
        assert (await raw.xpending(q, "relay"))["pending"] == 0
        assert await raw.xlen(q) == 0
    finally:
        await raw.aclose()


async def test_messages_stored_before_retention_existed_are_indexed_and_pruned(
    two: tuple[RedisStore, RedisStore], redis_url: str
) -> None:
    """A database written by a relay without the retention indexes: the first prune
    indexes what is there (once), then forgets what is old and closed."""
    a, b = two
    photo, orphan = "e5" * 32, "f6" * 32
    old = NOW - 500 * 86_400_000
    for digest in (photo, orphan):
        assert await a.put_attachment(digest, uploader="it-tpc", size=3, at=old)
    m = message(at=old, attachments=(photo,))
    await a.accept([m])
    for status in ("delivered", "acknowledged"):
        assert await a.add_receipt(receipt(m, status=status, at=old + 9), notify="it-tpc")
    raw = async_client(redis_url)
    try:  # as an older relay left it
        await raw.delete(
            redis_store.PREFIX + "retention",
            redis_store.PREFIX + "uploads",
            redis_store.PREFIX + "retention:indexed",
            f"{redis_store.PREFIX}{{{photo}}}:ms",
        )
        pruned = await b.prune(NOW - 400 * 86_400_000, limit=10)
        assert pruned.messages == 1 and sorted(pruned.attachments) == sorted([photo, orphan])
        assert await a.get_message(m.id) is None
        assert await raw.get(redis_store.PREFIX + "retention:indexed") == "1"
        leftovers = [k async for k in raw.scan_iter(match=f"{redis_store.PREFIX}{{{m.id}}}:*")]
        assert leftovers == []
    finally:
        await raw.aclose()


async def test_instances_append_to_one_log(two: tuple[RedisStore, RedisStore]) -> None:
    from keys.merkle import root_of
    from relay.store.base import log_leaf

    a, b = two
    m1, m2, m3 = message(), message(), message()
    await a.accept([m1])
    await b.accept([m2])
    head = await b.log_head()  # b integrates a's leaf too
    assert head.size == 2 and await a.log_head() == head
    await a.add_receipt(receipt(m2), notify="it-tpc")
    await b.accept([m3])
    final = await a.log_head()  # a's frontier was stale: reloaded, then extended
    assert final == await b.log_head() and final.size == 4
    leaves = await a.log_nodes([(0, i) for i in range(4)])
    assert [leaves[(0, i)] for i in range(4)] == [
        log_leaf(t)
        for t in (
            m1.accepted_receipt,
            m2.accepted_receipt,
            (await a.receipts(m2.id))[0].token,
            m3.accepted_receipt,
        )
    ]
    assert final.root == root_of([leaves[(0, i)] for i in range(4)])


# --- durability checks -------------------------------------------------------------------


def test_parse_version() -> None:
    assert parse_version("7.0.15") == (7, 0, 15)
    assert parse_version("7.2") == (7, 2, 0)
    assert parse_version("255.255.255-rc1") == (255, 255, 0)


@pytest.mark.parametrize(
    ("version", "appendonly", "appendfsync", "durability", "expected"),
    [
        ((7, 0, 15), "yes", "always", "always", False),  # fsync before every reply
        ((7, 2, 4), "yes", "always", "always", True),  # WAITAOF confirms it
        ((7, 2, 4), "yes", "everysec", "always", True),  # WAITAOF waits for the fsync
        ((7, 0, 15), "yes", "everysec", "everysec", False),
        ((7, 0, 15), "yes", "always", "everysec", False),
    ],
)
def test_durability_plan_accepts(
    version: tuple[int, int, int],
    appendonly: str,
    appendfsync: str,
    durability: redis_store.Durability,
    expected: bool,
) -> None:
    waitaof, _ = durability_plan(
        version=version,
        appendonly=appendonly,
        appendfsync=appendfsync,
        durability=durability,
        allow_no_aof=False,
    )
    assert waitaof is expected


@pytest.mark.parametrize(
    ("version", "appendonly", "appendfsync", "durability", "words"),
    [
        ((7, 0, 15), "no", "always", "always", "appendonly off"),
        ((7, 2, 0), "no", "always", "everysec", "appendonly off"),
        ((7, 0, 15), "yes", "everysec", "always", "needs appendfsync always \\(WAITAOF"),
        ((7, 2, 4), "yes", "no", "always", "needs appendfsync always or everysec"),
        ((7, 0, 15), "yes", "no", "everysec", "needs appendfsync everysec or always"),
        ((7, 0, 15), None, None, "always", "CONFIG GET refused"),
    ],
)
def test_durability_plan_refuses(
    version: tuple[int, int, int],
    appendonly: str | None,
    appendfsync: str | None,
    durability: redis_store.Durability,
    words: str,
) -> None:
    with pytest.raises(StoreConfigError, match=words) as info:
        durability_plan(
            version=version,
            appendonly=appendonly,
            appendfsync=appendfsync,
            durability=durability,
            allow_no_aof=False,
        )
    assert "\n" not in str(info.value)
    # The explicit escape hatch lets a test server without the AOF through.
    if appendonly != "yes" or appendfsync == "no":
        durability_plan(
            version=version,
            appendonly=appendonly,
            appendfsync=appendfsync,
            durability=durability,
            allow_no_aof=True,
        )


@needs_redis
async def test_a_server_without_the_aof_is_refused_unless_allowed(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "volatile", appendonly="no")
    await server.start()
    try:
        store = RedisStore(server.url)
        with pytest.raises(StoreConfigError, match="appendonly off"):
            await store.start()
        lenient = RedisStore(server.url, allow_no_aof=True)
        await lenient.start()
        (res,) = await lenient.accept([message()])
        assert res.outcome == "accepted"
        await lenient.close()
    finally:
        await server.kill()


# --- Redis going away and coming back ----------------------------------------------------


@needs_redis
@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_redis_down_is_unavailable_and_the_same_store_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    await server.start()
    store = RedisStore(server.url, instance="relay-a")
    other = RedisStore(server.url, instance="relay-b")
    await store.start()
    await other.start()
    inbox = Inbox()
    task = await listening(store, inbox)
    try:
        before = message()
        await store.accept([before])
        await server.kill()  # kill -9: what was accepted is in the AOF

        async def lost() -> bool:  # local sessions are told to re-read (and so find out)
            return inbox.resyncs >= 2

        await until(lost, 5)
        with pytest.raises(StoreUnavailableError):
            await store.accept([message()])
        with pytest.raises(StoreUnavailableError):
            await store.get_message(before.id)
        with pytest.raises(StoreUnavailableError):
            await store.ping()
        await server.start()

        async def works() -> bool:
            try:
                await store.ping()
            except StoreUnavailableError:
                return False
            return True

        await until(works, 10)
        assert (await store.get_message(before.id)) is not None
        (res,) = await store.accept([message()])
        assert res.outcome == "accepted"

        # The listener came back by itself, asked for a resync, and hears pushes again.
        # (Redis says so: the failed calls above asked for resyncs too, so their count
        # cannot tell.)
        async def resubscribed() -> bool:
            probe = async_client(server.url)
            try:
                ((_, listeners),) = await probe.pubsub_numsub(redis_store.CHANNEL)
            finally:
                await probe.aclose()
            return bool(listeners == 1 and inbox.resyncs >= 3)

        await until(resubscribed, 10)
        pushed = message()
        await other.accept([pushed])

        async def heard() -> bool:
            return any(i.msg_id == pushed.id for i in inbox.items)

        await until(heard, 5)
    finally:
        await stop(task)
        await store.close()
        await other.close()
        await server.kill()
