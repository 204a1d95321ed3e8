"""The outbox: its store (clients.store.outbox), the backoff, and the daemon's worker
(clients.outbox) against an in-process relay: accepted, duplicate, refused, unreachable,
and an envelope that expires while queued (never submitted; one ``expired`` event)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.client import RelayClient
from clients.outbox import OutboxWorker
from clients.store import Inbox, InboxError
from clients.store.outbox import backoff_ms
from keys.envelope import SealedEnvelope, seal
from tests.netfixture import NOW, Network
from tests.relayfixture import FakeClock, RelayEnv


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    async with await Inbox.open(tmp_path / "inbox.sqlite3") as box:
        yield box


def _seal(net: Network, now: int, text: str = "x", ttl_ms: int = 3_600_000) -> SealedEnvelope:
    return seal(
        net["it-tpc"],
        net.directory,
        to=["fr-oclcc"],
        content={"kind": "free_text", "text": text},
        now=now,
        priority="urgent",
        ttl_ms=ttl_ms,
    )


async def _queue(inbox: Inbox, sealed: SealedEnvelope, now: int) -> None:
    await inbox.sent.record(
        sealed.id,
        to=sealed.header.to,
        envelope_hash=sealed.hash,
        created=sealed.header.created,
        priority=sealed.header.prio,
        summary="x",
    )
    assert await inbox.outbox.queue(sealed.id, sealed.token, expires=sealed.header.expires, now=now)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, event: str, msg_id: str) -> None:
        self.seen.append((event, msg_id))


def _worker(
    inbox: Inbox, client: RelayClient, net: Network, clock: FakeClock, events: Events
) -> OutboxWorker:
    return OutboxWorker(
        inbox, lambda: client, lambda: net.directory, clock=clock, rand=lambda: 0.5, on_event=events
    )


# --- backoff ------------------------------------------------------------------------------


def test_backoff_is_full_jitter_doubling_up_to_the_cap() -> None:
    assert backoff_ms(1, 0.0) == 0  # full jitter: the first retry may be immediate
    assert [backoff_ms(n, 0.999999) for n in (1, 2, 3, 4)] == [999, 1999, 3999, 7999]
    assert backoff_ms(40, 0.999999, cap_ms=30_000) == 29_999
    assert backoff_ms(3, 0.5, base_ms=100) == 200


# --- the store ----------------------------------------------------------------------------


async def test_a_queued_envelope_is_due_at_once_and_queued_only_once(
    inbox: Inbox, net: Network
) -> None:
    sealed = _seal(net, NOW)
    await _queue(inbox, sealed, NOW)
    assert not await inbox.outbox.queue(
        sealed.id, sealed.token, expires=sealed.header.expires, now=NOW + 5
    )
    other = _seal(net, NOW, "another envelope")
    with pytest.raises(InboxError, match="already queued as another envelope"):
        await inbox.outbox.queue(sealed.id, other.token, expires=NOW + 1, now=NOW)
    [due] = await inbox.outbox.due(NOW)
    assert (due.id, due.state, due.attempts) == (sealed.id, "queued", 0)
    sent = await inbox.sent.get(sealed.id)
    assert sent is not None and sent.state == "queued"


async def test_a_failed_attempt_backs_off_and_waking_makes_it_due_again(
    inbox: Inbox, net: Network
) -> None:
    sealed = _seal(net, NOW)
    await _queue(inbox, sealed, NOW)
    due = await inbox.outbox.retry(sealed.id, error="down", now=NOW, rand=0.5)
    assert due == NOW + 500
    due = await inbox.outbox.retry(sealed.id, error="down", now=NOW, rand=0.5)
    assert due == NOW + 1000
    assert await inbox.outbox.due(NOW + 999) == []
    entry = await inbox.outbox.get(sealed.id)
    assert entry is not None and entry.attempts == 2 and entry.last_error == "down"
    assert await inbox.outbox.wake(NOW + 10) == 1
    assert [e.id for e in await inbox.outbox.due(NOW + 10)] == [sealed.id]
    await inbox.outbox.mark_submitted(sealed.id, at=NOW + 20)
    assert await inbox.outbox.due(NOW + 10_000) == []


# --- the worker ---------------------------------------------------------------------------


async def test_an_envelope_that_expires_while_queued_is_never_submitted(
    inbox: Inbox, net: Network
) -> None:
    sealed = _seal(net, NOW, ttl_ms=60_000)
    await _queue(inbox, sealed, NOW)
    clock = FakeClock(sealed.header.expires)
    events = Events()
    # A client for a port where nothing listens: submitting would fail loudly.
    async with RelayClient("http://127.0.0.1:9", net["it-tpc"], clock=clock) as client:
        worker = _worker(inbox, client, net, clock, events)
        assert await worker.run_due() == 1
        assert await worker.run_due() == 0  # expired once, not again
    entry = await inbox.outbox.get(sealed.id)
    assert entry is not None and entry.state == "expired" and entry.attempts == 0
    assert events.seen == [("expired", sealed.id)]
    sent = await inbox.sent.get(sealed.id)
    assert sent is not None and sent.state == "expired"


async def test_an_unreachable_relay_is_retried_later(inbox: Inbox, net: Network) -> None:
    sealed = _seal(net, NOW)
    await _queue(inbox, sealed, NOW)
    clock = FakeClock(NOW)
    async with RelayClient("http://127.0.0.1:9", net["it-tpc"], clock=clock) as client:
        assert await _worker(inbox, client, net, clock, Events()).run_due() == 1
    entry = await inbox.outbox.get(sealed.id)
    assert entry is not None and entry.state == "queued" and entry.attempts == 1
    assert entry.next_attempt_at == NOW + 500  # rand 0.5 of the first ceiling (1 s)
    assert entry.last_error is not None and "cannot reach the relay" in entry.last_error
    assert "ssl:default" not in entry.last_error


async def test_the_worker_submits_records_the_verified_receipt_and_a_repeat_is_accepted(
    relay: RelayEnv, inbox: Inbox
) -> None:
    net, clock = relay.net, relay.clock
    sealed = _seal(net, clock())
    await _queue(inbox, sealed, clock())
    worker = _worker(inbox, relay.client("it-tpc"), net, clock, Events())
    assert await worker.run_due() == 1
    entry = await inbox.outbox.get(sealed.id)
    assert entry is not None and entry.state == "submitted"
    [receipt] = await inbox.sent.timeline(sealed.id)
    assert receipt.status == "accepted" and receipt.signer == net.relay.id
    sent = await inbox.sent.get(sealed.id)
    assert sent is not None and sent.state == "accepted"
    # The same envelope queued again (say the first answer was lost): the relay knows the
    # id, answers "duplicate", and that counts as accepted.
    async with await Inbox.open(inbox.path.with_name("second.sqlite3")) as again:
        await _queue(again, sealed, clock())
        await _worker(again, relay.client("it-tpc"), net, clock, Events()).run_due()
        entry = await again.outbox.get(sealed.id)
        assert entry is not None and entry.state == "submitted"
    timeline = await relay.client("it-tpc").timeline(sealed.id)
    assert timeline.state == "accepted" and len(timeline.receipts) == 1


async def test_an_envelope_the_relay_refuses_is_failed_not_retried(
    relay: RelayEnv, inbox: Inbox
) -> None:
    net, clock = relay.net, relay.clock
    sealed = _seal(net, clock())
    await _queue(inbox, sealed, clock())
    # Submitted under another authority's signature: the relay refuses it (4xx).
    worker = _worker(inbox, relay.client("fr-oclcc"), net, clock, Events())
    assert await worker.run_due() == 1
    entry = await inbox.outbox.get(sealed.id)
    assert entry is not None and entry.state == "failed" and entry.last_error
    assert await inbox.outbox.due(clock() + 3_600_000) == []
    sent = await inbox.sent.get(sealed.id)
    assert sent is not None and sent.state == "failed"
