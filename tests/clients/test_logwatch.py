"""Clients keep the newest log head they verified and refuse one that does not extend
it: a relay that rewrites its history is caught by the daemon (one ERROR line, a metric,
a hook event) and by ``notice``, and the held head is kept as evidence."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from clients.hooks import FileHook
from clients.logwatch import ForkedLogError, LogWatch
from clients.metrics import families
from keys.envelope import seal
from keys.merkle import Frontier
from relay.api.state import STORE
from relay.store.sqlite import SQLiteStore
from tests.daemonfixture import running_daemon
from tests.relayfixture import RelayEnv
from tests.waiting import until

NOTICE = {"kind": "free_text", "text": "log watch test"}


async def _send(relay: RelayEnv, n: int) -> None:
    net = relay.net
    for _ in range(n):
        sealed = seal(
            net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=relay.clock()
        )
        await relay.client("it-tpc").send(sealed.token)


async def _rewrite_history(relay: RelayEnv, tokens: list[str]) -> None:
    """What an operator with write access to the relay's database could do."""
    assert relay.server is not None
    store = relay.server.app[STORE]
    assert isinstance(store, SQLiteStore)

    def op(conn: object) -> None:
        conn.execute("DELETE FROM log_nodes")  # type: ignore[attr-defined]
        store._log.frontier = Frontier()
        for token in tokens:
            store._log.append(conn, token)  # type: ignore[arg-type]

    await store._write(op)


async def test_the_daemon_refuses_a_rewritten_log_loudly(
    relay: RelayEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = relay.net.directory
    hooks_dir = tmp_path / "alarms"
    await _send(relay, 3)
    alarm_hook = FileHook(
        type="file", name="alarm", directory=hooks_dir, events=["log_inconsistent"]
    )
    async with running_daemon(relay, "fr-oclcc", tmp_path / "fr", hooks=[alarm_hook]) as daemon:
        await daemon.check_log(directory)
        held = daemon.log_head
        assert held is not None and held.size >= 3
        await _send(relay, 1)
        await daemon.check_log(directory)  # a newer head that extends it: taken
        assert daemon.log_head is not None and daemon.log_head.size > held.size
        held = daemon.log_head

        await _rewrite_history(relay, [f"forged.{i}.token" for i in range(held.size + 2)])
        with caplog.at_level(logging.ERROR, logger="clients.daemon"):
            await daemon.check_log(directory)
            await daemon.check_log(directory)  # the same fork: said once
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(lines) == 1 and "rewritten or forked" in lines[0]
        assert daemon.log_head == held and daemon.log_fork is not None
        kept = await asyncio.to_thread(LogWatch(daemon.settings.log_head_path).held)
        assert kept is not None and kept.token == held.token  # the evidence is kept
        text = {m.name: m for m in await families(daemon)}
        assert text["cpar_daemon_log_inconsistent"].samples[0].value == 1
        assert text["cpar_daemon_log_size"].samples[0].value == held.size

        async def alarmed() -> bool:  # the hook's file, renamed into place (not its temp)
            return await asyncio.to_thread(lambda: any(hooks_dir.glob("*.log_inconsistent.*.json")))

        await until(alarmed)
        (alarm,) = await asyncio.to_thread(lambda: list(hooks_dir.glob("*.json")))
        payload = json.loads(await asyncio.to_thread(alarm.read_text))
        assert payload["event"] == "log_inconsistent"
        assert payload["details"]["held_size"] == held.size


async def test_notice_refuses_a_rewritten_log_with_one_line(
    relay: RelayEnv, tmp_path: Path
) -> None:
    client = relay.client("it-tpc")
    watch = LogWatch(tmp_path / "log-head.json")
    await _send(relay, 2)
    first = await watch.check(client, relay.net.directory)
    assert first.held is None and first.head.size == 2
    await _send(relay, 1)
    second = await watch.check(client, relay.net.directory)
    assert second.held == first.head and second.head.size == 3
    await _rewrite_history(relay, ["a.b.c", "d.e.f", "g.h.i", "j.k.l"])
    with pytest.raises(ForkedLogError, match="rewritten or forked") as err:
        await watch.check(client, relay.net.directory)
    assert err.value.held == second.head and err.value.shown.size == 4
    assert await asyncio.to_thread(watch.held) == second.head


async def test_an_unreadable_head_file_is_one_line_not_a_crash(
    relay: RelayEnv, tmp_path: Path
) -> None:
    from keys.errors import LogError

    path = tmp_path / "log-head.json"
    await asyncio.to_thread(path.write_text, '{"head": "x.y.z"}{"trailing": 1}')
    with pytest.raises(LogError, match="delete it"):
        await LogWatch(path).check(relay.client("it-tpc"), relay.net.directory)
    async with running_daemon(relay, "fr-oclcc", tmp_path / "fr") as daemon:
        await asyncio.to_thread(daemon.settings.log_head_path.write_text, "not json")
        await daemon.check_log(relay.net.directory)  # logged, the daemon goes on
        assert daemon.connected.is_set()
