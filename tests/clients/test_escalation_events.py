"""Every escalation reaches a person: a real relay escalates (FakeClock and
``escalation.tick()``), real daemons record each event once and run each hook once per
event, with the event's type; ``notice inbox`` shows and sorts them."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from clients.daemon import Daemon
from clients.escalations import inbox_view
from clients.hooks import WebhookHook
from keys import wire
from keys.envelope import seal
from keys.receipts import sign_receipt
from relay.api.state import CORE
from tests.daemonfixture import running_daemon
from tests.relayfixture import RelayEnv
from tests.waiting import until

NOTICE = {"kind": "free_text", "text": "Lot 112 closes at 18:00"}
MINUTE = 60_000


@dataclass
class Target:
    """A local webhook receiver that counts hook runs by (authority, event, message)."""

    server: TestServer | None = None
    runs: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    keys: list[str] = field(default_factory=list)

    def url(self, aid: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(f"/hook/{aid}"))


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        t.runs[
            (
                request.match_info["aid"],
                request.headers["X-Cpar-Event"],
                request.headers["X-Cpar-Message-Id"],
            )
        ] += 1
        t.keys.append(request.headers["Idempotency-Key"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook/{aid}", hook)
    t.server = TestServer(app, host="127.0.0.1")
    await t.server.start_server()
    yield t
    await t.server.close()


def daemon(
    relay: RelayEnv, aid: str, data_dir: Path, target: Target, **hook: object
) -> AbstractAsyncContextManager[Daemon]:
    """``aid``'s daemon with one webhook hook ("pager") to ``target``."""
    pager = WebhookHook(type="webhook", name="pager", url=target.url(aid), **hook)  # type: ignore[arg-type]
    return running_daemon(relay, aid, data_dir, hook_interval_s=0.05, hooks=[pager])


async def test_a_reminder_and_a_release_each_run_one_hook_with_their_event(
    relay: RelayEnv, tmp_path: Path, target: Target
) -> None:
    assert relay.server is not None
    core = relay.server.app[CORE]
    net = relay.net
    async with (
        daemon(relay, "fr-oclcc", tmp_path / "oclcc", target) as oclcc,
        daemon(relay, "fr-desk", tmp_path / "desk", target) as desk,
        daemon(relay, "fr-deputy", tmp_path / "deputy", target, events=["escalation"]) as dep,
    ):
        sealed = seal(
            net["it-tpc"],
            net.directory,
            to=["fr-oclcc"],
            fallback=["fr-desk"],
            content=NOTICE,
            now=relay.clock(),
            priority="urgent",
        )
        await relay.client("it-tpc").send(sealed.token)
        msg = sealed.id

        async def ran(aid: str, event: str, times: int = 1) -> bool:
            return target.runs[(aid, event, msg)] >= times

        await until(lambda: ran("fr-oclcc", "received"))
        relay.clock.advance(10 * MINUTE)
        await core.escalation.tick()  # step 1: the recipient is reminded
        await until(lambda: ran("fr-oclcc", "reminded"))
        relay.clock.advance(20 * MINUTE)
        await core.escalation.tick()  # step 2: released to the fallback, deputy notified
        await until(lambda: ran("fr-desk", "released"))
        await until(lambda: ran("fr-deputy", "escalation"))

        # Each pushed item is one event, its hook runs once, and the inboxes show it.
        assert oclcc.inbox is not None and desk.inbox is not None and dep.inbox is not None
        [reminded] = [e for e in await oclcc.inbox.events.of_message(msg)]
        assert (reminded.event, reminded.data["priority"]) == ("reminded", "urgent")
        [released] = await desk.inbox.events.of_message(msg)
        assert released.event == "released"
        [notice] = await dep.inbox.events.of_message(msg)
        assert notice.event == "escalation"
        assert notice.data["as"] == "deputy"
        assert (notice.data["sender"], notice.data["to"]) == ("it-tpc", ["fr-oclcc"])

        now = relay.clock()
        [row] = await inbox_view(oclcc.inbox, now=now, limit=50, show_all=False)
        assert row.flags == ("reminded x1",) and row.reminders == 1
        [row] = await inbox_view(desk.inbox, now=now, limit=50, show_all=False)
        assert row.flags == ("released to you",)
        [row] = await inbox_view(dep.inbox, now=now, limit=50, show_all=False)
        assert row.flags == (f"escalated to you (deputy) about {msg} from it-tpc to fr-oclcc",)

        # The same reminder pushed again (after a lost acknowledgement) is the same event;
        # a later reminder (another queue item) is a new one.
        again = wire.EnvelopeItem(
            seq=int(reminded.occurrence), id=msg, envelope=sealed.token, reminder=True, note="r"
        )
        await oclcc.process([again])
        later = again.model_copy(update={"seq": again.seq + 1000})
        await oclcc.process([later])
        await until(lambda: ran("fr-oclcc", "reminded", 2))
        [row] = await inbox_view(oclcc.inbox, now=now, limit=50, show_all=False)
        assert row.flags == ("reminded x2",)

    # The daemons stopped with nothing in hand; a restart runs nothing again.
    async with daemon(relay, "fr-oclcc", tmp_path / "oclcc", target) as restarted:
        assert restarted.inbox is not None
        assert await restarted.inbox.hook_jobs.due(2**62) == []  # no job is pending
        jobs = await restarted.inbox.hook_jobs.of_message(msg)
        assert sorted(j.event for j in jobs if j.state == "done") == [
            "received",
            "reminded",
            "reminded",
        ]
    assert target.runs == Counter(
        {
            ("fr-oclcc", "received", msg): 1,
            ("fr-oclcc", "reminded", msg): 2,
            ("fr-desk", "released", msg): 1,
            ("fr-deputy", "escalation", msg): 1,
        }
    )
    assert len(set(target.keys)) == len(target.keys)  # every run had its own key


async def test_an_acknowledgement_of_our_message_runs_the_sender_s_hook_once(
    relay: RelayEnv, tmp_path: Path, target: Target
) -> None:
    net = relay.net
    async with (
        daemon(relay, "it-tpc", tmp_path / "it", target, events=["acknowledged"]),
        daemon(relay, "fr-oclcc", tmp_path / "oclcc", target, events=["escalation"]),
    ):
        sealed = seal(
            net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=relay.clock()
        )
        await relay.client("it-tpc").send(sealed.token)
        ack = sign_receipt(
            net["fr-oclcc"],
            msg_id=sealed.id,
            envelope_hash=sealed.hash,
            status="acknowledged",
            now=relay.clock(),
            person="Capt. Martin",
        )
        assert await relay.client("fr-oclcc").send_receipt(ack)
        assert not await relay.client("fr-oclcc").send_receipt(ack)  # a repeat: not queued

        async def acknowledged() -> bool:
            return target.runs[("it-tpc", "acknowledged", sealed.id)] == 1

        await until(acknowledged)
    assert target.runs == Counter({("it-tpc", "acknowledged", sealed.id): 1})
