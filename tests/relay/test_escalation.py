"""Escalation with an injected clock: no test sleeps for a step to come due.

The network (tests/netfixture.py) gives fr-oclcc a deputy (fr-deputy), a duty desk
(fr-desk) and a supervising authority (fr-ca), and Paris office hours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from keys import wire
from keys.encoding import b64d
from keys.envelope import SealedEnvelope, seal
from keys.receipts import sign_receipt, verify_receipt
from relay.api.state import CORE, Core
from relay.core.delivery import Delivery, Hub
from relay.core.escalation import EscalationEngine
from relay.settings import RelaySettings
from relay.store.memory import MemoryStore
from tests.netfixture import NOW, Network
from tests.relayfixture import FakeClock, RelayEnv, start_relay
from tests.waiting import until

MIN = 60_000
HOUR = 60 * MIN


def core_of(env: RelayEnv) -> Core:
    assert env.server is not None
    return env.server.app[CORE]


def urgent(env: RelayEnv, **kw: Any) -> SealedEnvelope:
    return seal(
        env.net["it-tpc"],
        env.net.directory,
        to=["fr-oclcc"],
        content={"kind": "free_text", "text": "x"},
        now=env.clock.now,
        priority=kw.pop("priority", "urgent"),
        **kw,
    )


async def escalated_steps(env: RelayEnv, msg_id: str) -> list[tuple[str, int | None, str | None]]:
    t = await env.client("it-tpc").timeline(msg_id)
    out = []
    for token in t.receipts:
        b = verify_receipt(token, env.net.directory).body
        if b.status in ("escalated", "expired"):
            out.append((b.status, b.step, b.reason))
    return out


async def advance_and_tick(env: RelayEnv, ms: int) -> int:
    env.clock.advance(ms)
    return await core_of(env).escalation.tick()


async def test_full_chain_remind_release_notify(relay: RelayEnv) -> None:
    sealed = urgent(relay, fallback=["fr-desk"])
    await relay.client("it-tpc").send(sealed.token)
    first = await relay.client("fr-oclcc").poll()
    assert [i.reminder for i in first] == [False]

    assert await advance_and_tick(relay, 9 * MIN) == 0  # not yet due
    assert await advance_and_tick(relay, 1 * MIN) == 1  # 10 min: remind
    items = await relay.client("fr-oclcc").poll(after=first[0].seq)
    assert len(items) == 1 and items[0].type == "envelope" and items[0].reminder is True
    assert items[0].envelope == sealed.token and "reminder" in items[0].note
    assert [s[:2] for s in await escalated_steps(relay, sealed.id)] == [("escalated", 1)]

    assert await advance_and_tick(relay, 20 * MIN) == 1  # 30 min: release
    desk = await relay.client("fr-desk").poll()
    assert [i.type for i in desk] == ["envelope"] and desk[0].envelope == sealed.token
    assert "released to you" in desk[0].note
    deputy = await relay.client("fr-deputy").poll()
    assert [i.type for i in deputy] == ["escalation"]
    notice = verify_receipt(deputy[0].notice, relay.net.directory)
    assert notice.status == "escalated" and notice.body.step == 2 and notice.signer.role == "relay"

    assert await advance_and_tick(relay, 90 * MIN) == 1  # 2 h: notify supervisor
    supervisor = await relay.client("fr-ca").poll()
    assert [i.type for i in supervisor] == ["escalation"]
    steps = await escalated_steps(relay, sealed.id)
    assert [s[:2] for s in steps] == [("escalated", 1), ("escalated", 2), ("escalated", 3)]
    assert "fr-desk" in (steps[1][2] or "") and "fr-ca" in (steps[2][2] or "")
    # Nothing else is due before expiry, and a second tick never repeats a step.
    assert await advance_and_tick(relay, 24 * HOUR) == 0
    # The fallback, once released, may acknowledge; that closes the message.
    ack = sign_receipt(
        relay.net["fr-desk"],
        msg_id=sealed.id,
        envelope_hash=sealed.hash,
        status="acknowledged",
        now=relay.clock.now,
        person="Desk officer",
    )
    assert await relay.client("fr-desk").send_receipt(ack) is True  # new to the relay
    assert (await relay.client("it-tpc").timeline(sealed.id)).state == "acknowledged"


async def test_acknowledgement_between_steps_stops_escalation(relay: RelayEnv) -> None:
    sealed = urgent(relay, fallback=["fr-desk"])
    await relay.client("it-tpc").send(sealed.token)
    assert await advance_and_tick(relay, 10 * MIN) == 1
    ack = sign_receipt(
        relay.net["fr-oclcc"],
        msg_id=sealed.id,
        envelope_hash=sealed.hash,
        status="acknowledged",
        now=relay.clock.now,
        person="Lt. Dupont",
    )
    await relay.client("fr-oclcc").send_receipt(ack)
    assert await advance_and_tick(relay, 3 * HOUR) == 0
    assert await advance_and_tick(relay, 30 * 24 * HOUR) == 0  # not even expiry
    assert [s[1] for s in await escalated_steps(relay, sealed.id)] == [1]
    assert await relay.client("fr-desk").poll() == []
    pending, overdue, _ = await core_of(relay).store.timer_stats(
        relay.clock.now, overdue_after_ms=1000
    )
    assert (pending, overdue) == (0, 0)


async def test_acknowledgement_racing_a_firing_timer_wins(relay: RelayEnv) -> None:
    """The step was planned (receipt signed) but the acknowledgement commits first."""
    core = core_of(relay)
    sealed = urgent(relay, fallback=["fr-desk"])
    await relay.client("it-tpc").send(sealed.token)
    relay.clock.advance(30 * MIN)
    due = await core.store.due_timers(relay.clock.now, limit=10)
    plans = [p.store for p in core.escalation._plan_all(due, relay.clock.now)]
    assert [p.timer.step for p in plans] == [1]
    ack = sign_receipt(
        relay.net["fr-oclcc"],
        msg_id=sealed.id,
        envelope_hash=sealed.hash,
        status="acknowledged",
        now=relay.clock.now,
        person="Lt. Dupont",
    )
    await relay.client("fr-oclcc").send_receipt(ack)
    assert await core.store.fire(plans) == [None]  # fenced off: the generation moved on
    assert await escalated_steps(relay, sealed.id) == []
    assert await relay.client("fr-desk").poll() == []


async def test_a_notify_step_fenced_off_by_an_acknowledgement_never_warns(
    relay: RelayEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """Operators are warned after the fenced commit, only for a step that took effect."""
    core = core_of(relay)
    sealed = urgent(relay)
    await relay.client("it-tpc").send(sealed.token)
    assert await advance_and_tick(relay, 11 * MIN) == 1  # remind
    assert await advance_and_tick(relay, 20 * MIN) == 1  # release
    relay.clock.advance(2 * HOUR)
    due = await core.store.due_timers(relay.clock.now, limit=10)
    planned = core.escalation._plan_all(due, relay.clock.now)
    assert [p.store.timer.step for p in planned] == [3]
    assert planned[0].effects.alert_operators
    ack = sign_receipt(
        relay.net["fr-oclcc"],
        msg_id=sealed.id,
        envelope_hash=sealed.hash,
        status="acknowledged",
        now=relay.clock.now,
        person="Lt. Dupont",
    )
    await relay.client("fr-oclcc").send_receipt(ack)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="relay.core.escalation"):
        results = await core.store.fire([p.store for p in planned])
        assert core.escalation._publish(planned, results) == 0
    assert results == [None]
    assert [r for r in caplog.records if "escalation to operators" in r.getMessage()] == []
    assert [s[1] for s in await escalated_steps(relay, sealed.id)] == [1, 2]


async def test_a_notify_step_that_fires_warns_the_operators_once(
    relay: RelayEnv, caplog: pytest.LogCaptureFixture
) -> None:
    sealed = urgent(relay)
    await relay.client("it-tpc").send(sealed.token)
    assert await advance_and_tick(relay, 11 * MIN) == 1
    assert await advance_and_tick(relay, 20 * MIN) == 1
    with caplog.at_level(logging.WARNING, logger="relay.core.escalation"):
        assert await advance_and_tick(relay, 2 * HOUR) == 1
    warned = [r for r in caplog.records if "escalation to operators" in r.getMessage()]
    assert len(warned) == 1 and sealed.id in warned[0].getMessage()


async def test_each_timer_fires_once_even_when_fired_twice(relay: RelayEnv) -> None:
    core = core_of(relay)
    sealed = urgent(relay)
    await relay.client("it-tpc").send(sealed.token)
    relay.clock.advance(10 * MIN)
    due = await core.store.due_timers(relay.clock.now, limit=10)
    plans = [p.store for p in core.escalation._plan_all(due, relay.clock.now)]
    first, second = await core.store.fire(plans), await core.store.fire(plans)
    assert second == [None]
    (seqs,) = first
    assert seqs is not None and len(seqs) == 2  # the reminder, then the sender's receipt
    # Counted in effects: one reminder queued, one escalated receipt.
    queued = await relay.client("fr-oclcc").poll()
    reminders = [i.seq for i in queued if isinstance(i, wire.EnvelopeItem) and i.reminder]
    assert reminders == [seqs[0]]
    told = await relay.client("it-tpc").poll()
    assert [i.seq for i in told if isinstance(i, wire.ReceiptItem)] == [seqs[1]]
    assert [s[1] for s in await escalated_steps(relay, sealed.id)] == [1]


async def test_message_that_expires_is_closed_and_withdrawn(relay: RelayEnv) -> None:
    sealed = urgent(relay, ttl_ms=5 * MIN)  # expires before the first reminder
    await relay.client("it-tpc").send(sealed.token)
    assert await advance_and_tick(relay, 5 * MIN) == 1
    assert await escalated_steps(relay, sealed.id) == [
        ("expired", None, "expired before any recipient acknowledged")
    ]
    assert (await relay.client("it-tpc").timeline(sealed.id)).state == "expired"
    assert await relay.client("fr-oclcc").poll() == []  # the queued copy was withdrawn
    assert await advance_and_tick(relay, 3 * HOUR) == 0  # no escalation after expiry


async def test_recipient_that_never_connected_still_escalates(relay: RelayEnv) -> None:
    sealed = urgent(relay)
    await relay.client("it-tpc").send(sealed.token)
    for _ in range(3):
        await advance_and_tick(relay, HOUR)
    assert [s[1] for s in await escalated_steps(relay, sealed.id)] == [1, 2, 3]
    items = await relay.client("fr-oclcc").poll()
    assert [i.reminder for i in items] == [False, True]  # original and one reminder


async def test_ack_by_tightens_but_never_loosens(relay: RelayEnv) -> None:
    early = urgent(relay, ack_by=relay.clock.now + 3 * MIN)
    late = urgent(relay, ack_by=relay.clock.now + 50 * MIN)
    await relay.client("it-tpc").send(early.token)
    await relay.client("it-tpc").send(late.token)
    assert await advance_and_tick(relay, 3 * MIN) == 1  # early: reminded at its ack-by
    assert [s[1] for s in await escalated_steps(relay, early.id)] == [1]
    assert await escalated_steps(relay, late.id) == []
    assert await advance_and_tick(relay, 7 * MIN) == 1  # late: policy's 10 min still applies
    assert [s[1] for s in await escalated_steps(relay, late.id)] == [1]


async def test_working_hours_defer_reminders_to_the_next_opening(relay: RelayEnv) -> None:
    # Routine policy respects working hours. NOW is Friday 08:00 UTC (09:00 Paris);
    # the 2-day reminder falls on Sunday, so it waits for Monday 08:00 Paris.
    sealed = urgent(relay, priority="routine")
    await relay.client("it-tpc").send(sealed.token)
    assert await advance_and_tick(relay, 2 * 24 * HOUR) == 0  # Sunday: deferred, not fired
    assert await escalated_steps(relay, sealed.id) == []
    monday_open = NOW + 3 * 24 * HOUR - HOUR  # Monday 07:00 UTC = 08:00 Paris
    relay.clock.now = monday_open - 1
    assert await core_of(relay).escalation.tick() == 0
    relay.clock.now = monday_open
    assert await core_of(relay).escalation.tick() == 1
    assert [s[1] for s in await escalated_steps(relay, sealed.id)] == [1]


@pytest.fixture
async def restartable(
    relay_settings: RelaySettings, net: Network
) -> AsyncIterator[tuple[RelaySettings, Network, FakeClock]]:
    yield relay_settings, net, FakeClock()


async def test_timers_survive_a_restart_and_config_changes_do_not_touch_messages_in_flight(
    restartable: tuple[RelaySettings, Network, FakeClock],
) -> None:
    settings, net, clock = restartable
    env = RelayEnv(net=net, settings=settings, clock=clock)
    async for started in start_relay(env):
        sealed = urgent(started)
        await started.client("it-tpc").send(sealed.token)
    # Restart with a much slower urgent policy: the message keeps the policy it had.
    slower = settings.model_copy(
        update={"policies": {**settings.policies, "urgent": settings.policies["routine"]}}
    )
    env2 = RelayEnv(net=net, settings=slower, clock=clock)
    async for again in start_relay(env2):
        assert await advance_and_tick(again, 10 * MIN) == 1
        assert [s[1] for s in await escalated_steps(again, sealed.id)] == [1]
        fresh = urgent(again)
        await again.client("it-tpc").send(fresh.token)
        # Under the old urgent policy the new message would be reminded at 10 min; under
        # the new one nothing is due yet (the first message's release is at 30 min).
        assert await advance_and_tick(again, 10 * MIN) == 0
        assert await escalated_steps(again, fresh.id) == []  # new messages get the new policy


async def test_a_store_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    net: Network, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    await store.start()
    clock = FakeClock()
    delivery = Delivery(store=store, hub=Hub(), clock=clock)
    engine = EscalationEngine(
        store=store,
        delivery=delivery,
        identity=net.relay,
        directory=lambda: net.directory,
        clock=clock,
    )
    caplog.set_level(logging.INFO, logger="relay.core.escalation")
    task = asyncio.create_task(engine.run(interval_s=0.005, audit_every_s=0.005))
    try:
        await until(lambda: _true(store._open))
        store._open = False  # the backend goes away (as a closed connection would)

        async def warned() -> bool:
            return any("escalation paused" in r.getMessage() for r in caplog.records)

        await until(warned)
        rounds_before = len(caplog.records)
        await asyncio.sleep(0.1)  # many failing rounds: no more lines
        assert len(caplog.records) == rounds_before
        store._open = True

        async def resumed() -> bool:
            return any("escalation resumed" in r.getMessage() for r in caplog.records)

        await until(resumed)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "escalation paused" in m]) == 1
    assert len([m for m in lines if "escalation resumed" in m]) == 1
    assert not [r for r in caplog.records if r.exc_info]  # no traceback for an outage


async def _true(value: bool) -> bool:
    return value


async def test_one_round_of_escalations_is_signed_as_one_batch(relay: RelayEnv) -> None:
    sealed = [urgent(relay) for _ in range(3)]
    for s in sealed:
        await relay.client("it-tpc").send(s.token)
    assert await advance_and_tick(relay, 10 * MIN) == 3  # three reminders in one round
    segments = []
    for s in sealed:
        t = await relay.client("it-tpc").timeline(s.id)
        (token,) = [
            x for x in t.receipts if verify_receipt(x, relay.net.directory).status == "escalated"
        ]
        segments.append(b64d(token.split(".")[2]))
    # Batch of three (index, size 3), one signature shared by all.
    assert sorted(int.from_bytes(p[:4], "big") for p in segments) == [0, 1, 2]
    assert {int.from_bytes(p[4:8], "big") for p in segments} == {3}
    assert len({p[-64:] for p in segments}) == 1
