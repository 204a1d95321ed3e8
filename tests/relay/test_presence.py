"""Send-time presence: the sender is told which recipients' daemons are offline (since
when) and when the escalation steps will happen; ``GET /v1/presence`` lists everyone."""

from __future__ import annotations

from keys.envelope import seal
from keys.lifecycle import Step
from relay.api.state import CORE
from tests.relayfixture import RelayEnv

NOTICE = {"kind": "free_text", "text": "Lot 112 closes at 18:00"}


async def test_a_single_send_says_who_is_offline_and_when_the_steps_are_due(
    relay: RelayEnv,
) -> None:
    assert relay.server is not None
    core = relay.server.app[CORE]
    started = relay.clock()
    relay.clock.advance(60_000)
    # de-bka's daemon answered a probe just now; fr-oclcc has never been seen.
    core.prober.answers["de-bka"] = relay.clock()
    sealed = seal(
        relay.net["it-tpc"],
        relay.net.directory,
        to=["fr-oclcc", "de-bka"],
        fallback=["fr-desk"],
        content=NOTICE,
        now=relay.clock(),
        priority="urgent",
    )
    answer = await relay.client("it-tpc").send(sealed.token)
    assert answer.recipients is not None and answer.schedule is not None
    presence = {p.id: (p.reachable, p.unreachable_since) for p in answer.recipients}
    assert presence == {"fr-oclcc": (False, started), "de-bka": (True, None)}
    record = await core.store.get_message(sealed.id)
    assert record is not None
    steps = [(s.step, s.name) for s in answer.schedule]
    assert steps[:2] == [(Step.REMIND, "remind"), (Step.RELEASE, "release")]
    assert all(s.due > relay.clock() for s in answer.schedule)
    # The same envelope again: the relay answers as before, without a plan.
    again = await relay.client("it-tpc").send(sealed.token)
    assert again.duplicate and again.recipients is None and again.schedule is None


async def test_presence_lists_every_authority_and_nothing_else(relay: RelayEnv) -> None:
    assert relay.server is not None
    relay.server.app[CORE].prober.answers["fr-oclcc"] = relay.clock()
    answer = await relay.client("de-bka").presence()
    rows = {p.id: p for p in answer.authorities}
    assert set(rows) == {a.id for a in relay.net.directory.authorities if a.role != "relay"}
    assert rows["fr-oclcc"].reachable and rows["fr-oclcc"].unreachable_since is None
    assert not rows["it-tpc"].reachable and rows["it-tpc"].unreachable_since is not None
    assert answer.at == relay.clock()


async def test_policy_gives_each_prioritys_steps_as_a_message_accepted_now_gets_them(
    relay: RelayEnv,
) -> None:
    from relay.core.policy import DEFAULT_POLICIES, parse_duration

    answer = await relay.client("fr-oclcc").policy()
    assert [p.priority for p in answer.policies] == ["urgent", "high", "routine"]
    for p in answer.policies:
        want = DEFAULT_POLICIES[p.priority]
        assert p.remind_after_ms == parse_duration(want.remind_after)
        assert p.release_after_ms == parse_duration(want.release_after)
        assert p.notify_after_ms == parse_duration(want.notify_after)
        assert p.working_hours == want.working_hours
    # What it says is what an urgent message accepted now is given.
    urgent = answer.policies[0]
    sealed = seal(
        relay.net["it-tpc"],
        relay.net.directory,
        to=["fr-oclcc"],
        content=NOTICE,
        now=relay.clock(),
        priority="urgent",
    )
    sent = await relay.client("it-tpc").send(sealed.token)
    assert sent.schedule is not None
    due = {s.name: s.due for s in sent.schedule}
    assert due["remind"] - urgent.remind_after_ms == due["release"] - urgent.release_after_ms
