"""The people at the edges: ``notice send`` says who is offline and when escalation
happens, suggests the closest ids for a typo, ``notice inbox`` puts the most urgent
first with its escalation marks, ``notice show`` has the history, ``notice directory``
says who is reachable now. A real relay (FakeClock) and real daemons, in process."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clients.cli import main
from clients.config import load_client_settings
from clients.daemon import Daemon
from clients.store import Inbox
from keys.encoding import b64e
from keys.keystore import save_keystore
from relay.api.state import CORE
from tests.netfixture import Network
from tests.relayfixture import RelayEnv
from tests.waiting import until

PASSPHRASE = "notice test passphrase"
MINUTE = 60_000


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass(frozen=True)
class Authority:
    aid: str
    config: Path


class Notice:
    def __init__(self, capsys: pytest.CaptureFixture[str], clock: Callable[[], int]) -> None:
        self._capsys = capsys
        self._clock = clock

    async def __call__(self, who: Authority, *args: str) -> Result:
        self._capsys.readouterr()
        argv = ["--config", str(who.config), *args]
        code = await asyncio.to_thread(main, argv, clock=self._clock)
        out, err = self._capsys.readouterr()
        return Result(code, out, err)


def write_authority(tmp: Path, net: Network, aid: str, relay_url: str) -> Authority:
    home = tmp / aid
    home.mkdir(parents=True, exist_ok=True)
    save_keystore(home / "authority.ks", net[aid], PASSPHRASE, strength="test", overwrite=True)
    (home / "passphrase").write_text(PASSPHRASE + "\n")
    (home / "passphrase").chmod(0o600)
    settings = {
        "relay_url": relay_url,
        "keystore": str(home / "authority.ks"),
        "passphrase_file": str(home / "passphrase"),
        "root_key": b64e(net.root.signing_key().public),
        "data_dir": str(home / "data"),
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
        "hook_interval_s": 0.05,
    }
    config = home / "notice.toml"
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return Authority(aid, config)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CPAR_"):
            monkeypatch.delenv(name)


@pytest.fixture
def it(tmp_path: Path, relay: RelayEnv) -> Authority:
    return write_authority(tmp_path, relay.net, "it-tpc", relay.base_url)


@pytest.fixture
def fr(tmp_path: Path, relay: RelayEnv) -> Authority:
    return write_authority(tmp_path, relay.net, "fr-oclcc", relay.base_url)


@pytest.fixture
def notice(capsys: pytest.CaptureFixture[str], relay: RelayEnv) -> Notice:
    return Notice(capsys, relay.clock)


@asynccontextmanager
async def running_daemon(relay: RelayEnv, who: Authority) -> AsyncIterator[Daemon]:
    settings = await asyncio.to_thread(load_client_settings, who.config)
    daemon = Daemon(settings, relay.net[who.aid], clock=relay.clock)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        async with asyncio.timeout(10):
            await daemon.connected.wait()
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def _send(*extra: str) -> list[str]:
    return ["send", "--kind", "free_text", "--text", "Lot 112 closes at 18:00", *extra]


async def test_send_says_who_is_offline_since_when_and_when_escalation_happens(
    relay: RelayEnv, notice: Notice, it: Authority
) -> None:
    # Any case is accepted: ids are lower case.
    r = await notice(
        it, *_send("--to", "FR-OCLCC", "--fallback", "fr-desk", "--priority", "urgent")
    )
    assert r.code == 0, r.err
    assert (
        "fr-oclcc's daemon is offline since 08:00 UTC: reminder at 08:10, "
        "released to fr-desk at 08:30, supervisor notified at 10:00"
    ) in r.out
    r = await notice(it, *_send("--to", "fr-oclcc", "--priority", "urgent", "--json"))
    sent = r.json()
    assert sent["recipients"] == [
        {"id": "fr-oclcc", "reachable": False, "unreachable_since": "2027-01-15T08:00:00.000Z"}
    ]
    assert [s["name"] for s in sent["schedule"]] == ["remind", "release", "notify"]
    assert sent["offline"] == [
        "fr-oclcc's daemon is offline since 08:00 UTC: reminder at 08:10, released to "
        "the deputies and duty desk at 08:30, supervisor notified at 10:00"
    ]


async def test_a_send_leaves_one_sent_hook_job_for_the_daemon(
    relay: RelayEnv, notice: Notice, it: Authority, tmp_path: Path
) -> None:
    hook = (
        '\n[[hooks]]\ntype = "file"\nname = "sent-log"\n'
        f'directory = "{tmp_path / "sent-log"}"\nevents = ["sent", "acknowledged"]\n'
    )
    await asyncio.to_thread(lambda: it.config.write_text(it.config.read_text() + hook))
    r = await notice(it, *_send("--to", "fr-oclcc", "--json"))
    assert r.code == 0, r.err
    msg_id = r.json()["id"]
    settings = await asyncio.to_thread(load_client_settings, it.config)
    async with await Inbox.open(settings.inbox_path) as inbox:
        [job] = await inbox.hook_jobs.of_message(msg_id)
        assert (job.hook, job.event, job.state) == ("sent-log", "sent", "pending")
        [event] = await inbox.events.of_message(msg_id)
        assert event.data == {"to": ["fr-oclcc"], "priority": "routine"}


async def test_a_reachable_recipient_gets_no_offline_line(
    relay: RelayEnv, notice: Notice, it: Authority, fr: Authority
) -> None:
    async with running_daemon(relay, fr):
        r = await notice(it, *_send("--to", "fr-oclcc", "--json"))
        assert r.code == 0, r.err
        assert r.json()["offline"] == []
        assert r.json()["recipients"][0]["reachable"] is True


async def test_a_recipient_typo_suggests_the_closest_ids(
    relay: RelayEnv, notice: Notice, it: Authority
) -> None:
    r = await notice(it, *_send("--to", "fr-oclc"))
    assert r.code == 1 and r.out == ""
    assert r.err == (
        "notice: error: recipient fr-oclc is not in the directory (did you mean fr-oclcc or fr-ca?); "
        "'notice directory' lists the authorities\n"
    )
    r = await notice(it, *_send("--to", "fr-oclcc", "--fallback", "fr-dsk"))
    assert "did you mean fr-desk?" in r.err and r.code == 1


async def test_inbox_puts_the_most_urgent_first_with_its_escalation_marks(
    relay: RelayEnv, notice: Notice, it: Authority, fr: Authority
) -> None:
    assert relay.server is not None
    core = relay.server.app[CORE]
    async with running_daemon(relay, fr) as daemon:
        routine = (await notice(it, *_send("--to", "fr-oclcc", "--json"))).json()["id"]
        urgent = (
            await notice(it, *_send("--to", "fr-oclcc", "--priority", "urgent", "--json"))
        ).json()["id"]

        async def stored() -> bool:
            assert daemon.inbox is not None
            return len(await daemon.inbox.received.list()) == 2

        await until(stored)
        relay.clock.advance(12 * MINUTE)
        await core.escalation.tick()  # the urgent one is reminded

        async def reminded() -> bool:
            assert daemon.inbox is not None
            return bool(await daemon.inbox.events.of_message(urgent))

        await until(reminded)
        relay.clock.advance(2 * MINUTE)  # overdue since the first reminder
        rows = (await notice(fr, "inbox", "--json")).json()
        assert [r["id"] for r in rows] == [urgent, routine]
        assert (rows[0]["reminded"], rows[0]["overdue_by_s"]) == (1, 2 * 60)
        assert rows[0]["flags"] == ["reminded x1"]
        assert (rows[1]["reminded"], rows[1]["overdue_by_s"]) == (0, None)
        out = (await notice(fr, "inbox")).out
        assert "reminded x1" in out and "overdue by 2 min" in out
        shown = (await notice(fr, "show", urgent, "--json")).json()
        assert [e["event"] for e in shown["events"]] == ["reminded"]
        out = (await notice(fr, "show", urgent)).out
        assert "Escalation history" in out and "reminded: reminder: not acknowledged" in out


async def test_directory_lists_contacts_hours_and_who_is_reachable(
    relay: RelayEnv, notice: Notice, it: Authority, fr: Authority
) -> None:
    async with running_daemon(relay, fr):
        r = await notice(it, "directory", "--json")
        assert r.code == 0, r.err
        rows = {a["id"]: a for a in r.json()["authorities"]}
        assert "relay-eu" not in rows
        assert rows["fr-oclcc"]["reachable"] is True
        assert rows["de-bka"]["reachable"] is False
        assert rows["de-bka"]["unreachable_since"] == "2027-01-15T08:00:00.000Z"
        assert rows["fr-oclcc"]["country"] == "FR"
        r = await notice(it, "directory")
        assert r.code == 0 and "reachable" in r.out and "offline since" in r.out


async def test_a_deputy_sees_the_escalation_in_inbox_and_show(
    relay: RelayEnv, notice: Notice, it: Authority, tmp_path: Path
) -> None:
    assert relay.server is not None
    core = relay.server.app[CORE]
    deputy = await asyncio.to_thread(
        write_authority, tmp_path, relay.net, "fr-deputy", relay.base_url
    )
    async with running_daemon(relay, deputy) as daemon:
        r = await notice(it, *_send("--to", "fr-oclcc", "--priority", "urgent", "--json"))
        msg_id = r.json()["id"]
        relay.clock.advance(10 * MINUTE)
        await core.escalation.tick()
        relay.clock.advance(20 * MINUTE)
        await core.escalation.tick()  # release: the deputy is notified

        async def notified() -> bool:
            assert daemon.inbox is not None
            return bool(await daemon.inbox.events.of_message(msg_id))

        await until(notified)
    [row] = (await notice(deputy, "inbox", "--json")).json()
    assert row["id"] == msg_id and row["state"] == "escalated to you"
    assert row["flags"] == [f"escalated to you (deputy) about {msg_id} from it-tpc to fr-oclcc"]
    assert row["escalation"]["reason"].startswith("policy step 2 (release), due ")
    assert "fr-oclcc has not acknowledged; notified fr-deputy" in row["escalation"]["reason"]
    out = (await notice(deputy, "show", msg_id)).out
    assert "is not in this inbox" in out and "escalated to you (deputy)" in out
    shown = (await notice(deputy, "show", msg_id, "--json")).json()
    assert shown["in_inbox"] is False and shown["events"][0]["as"] == "deputy"
