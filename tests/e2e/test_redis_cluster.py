"""Several `relay serve` processes on one private Redis: the promises of the scale-out.

Real processes on loopback with the real clock: a redis-server started here (AOF,
``appendfsync always``, its own port and folder; never the shared one), two or three
relays with ``RELAY_STORE=redis``, and `notice daemon` processes that know every relay
URL (``relay_urls``: each reconnect goes to the next instance).

- messages and receipts cross instances (sender on one, recipient on another);
- a relay killed with kill -9 under load: its daemon moves to another instance and every
  accepted message reaches the recipient exactly once, counted in effects (hook runs,
  ``delivered`` receipts queued for the sender), not in the inbox keyed by message id;
- escalation timers, raced by three instances, each take effect exactly once;
- Redis killed with kill -9 and restarted under load: no accepted message is lost, and
  each still takes effect once;
- Redis down: 503 problem+json, and the same relay recovers by itself;
- a Redis without the AOF: the relay refuses to start, with one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

from clients.client import RelayClient
from clients.errors import ClientError, UnavailableError
from clients.store import Inbox
from keys.encoding import now_ms
from keys.envelope import seal
from keys.receipts import verify_receipt
from tests.procfixture import (
    Cluster,
    HookRun,
    free_port,
    hook_runs,
    hooks_finished,
    receipts_queued,
    write_cluster,
)
from tests.redisfixture import REDIS_SERVER, RedisServer
from tests.waiting import until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
]

SHORT_POLICIES = "".join(
    f'\n[policies.{p}]\nremind_after = "1s"\nrelease_after = "2s"\nnotify_after = "3s"\n'
    for p in ("urgent", "high", "routine")
)


@dataclass
class Fleet:
    """N relay processes sharing one Redis, and the daemons (files written beforehand)."""

    c: Cluster
    redis: RedisServer
    ports: list[int]
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    clients: dict[tuple[str, int], RelayClient] = field(default_factory=dict)
    logs: list[IO[bytes]] = field(default_factory=list)

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def client(self, aid: str, i: int) -> RelayClient:
        if (aid, i) not in self.clients:
            self.clients[aid, i] = RelayClient(self.url(i), self.c.net[aid])
        return self.clients[aid, i]

    async def _log(self, name: str) -> IO[bytes]:
        fh = await asyncio.to_thread(open, self.c.root / f"{name}.log", "ab")
        self.logs.append(fh)
        return fh

    async def start_relay(self, i: int, **env: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relay.cli",
            "serve",
            "--config",
            str(self.c.root / "relay.toml"),
            env={
                **os.environ,
                "RELAY_PORT": str(self.ports[i]),
                "RELAY_DATA_DIR": str(self.c.root / f"relay-{i}"),
                "RELAY_STORE": "redis",
                "RELAY_REDIS_URL": self.redis.url,
                "RELAY_ESCALATION_INTERVAL_S": "0.1",
                **env,
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=await self._log(f"relay-{i}"),
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if b"listening" not in line:
            raise RuntimeError(f"relay {i} did not start: {line!r}")
        self.procs[f"relay-{i}"] = proc

    async def start_daemon(self, aid: str) -> None:
        self.procs[aid] = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clients.cli",
            "--config",
            str(self.c.root / aid / "client.toml"),
            "daemon",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=await self._log(aid),
        )

    async def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        await asyncio.wait_for(proc.wait(), 30)

    async def stop(self) -> None:
        for client in self.clients.values():
            await client.close()
        for name in list(self.procs):
            await self.kill(name)
        await self.redis.kill()
        for fh in self.logs:
            await asyncio.to_thread(fh.close)

    async def inbox_ids(self, aid: str) -> list[str]:
        return await self.c.inbox_ids(aid)

    def seal(self, i: int, *, to: str = "fr-oclcc", sender: str = "it-tpc", **kw: Any) -> Any:
        return seal(
            self.c.net[sender],
            self.c.net.directory,
            to=[to],
            content={"kind": "free_text", "text": f"notice {i}"},
            now=now_ms(),
            priority="urgent",
            **kw,
        )

    async def send_all(self, sender: str, tokens: list[tuple[str, str]]) -> set[str]:
        """Send each envelope through the instances in turn; on failure (instance killed,
        Redis down) retry on the next one. Returns the ids accepted."""
        accepted: set[str] = set()
        turn = 0
        for msg_id, token in tokens:

            async def sent(msg_id: str = msg_id, token: str = token) -> bool:
                nonlocal turn
                for _ in self.ports:
                    turn += 1
                    try:
                        await self.client(sender, turn % len(self.ports)).send(token)
                    except ClientError:
                        continue
                    accepted.add(msg_id)
                    return True
                return False  # every instance refused

            await until(sent, 30)
        return accepted


def make_fleet(root: Path, relays: int, daemons: dict[str, int], *, policies: str = "") -> Fleet:
    """Files for ``relays`` instances and daemons (aid -> the instance it starts on)."""
    c = write_cluster(root, list(daemons))
    ports = [free_port() for _ in range(relays)]
    with (root / "relay.toml").open("a") as fh:
        fh.write(policies)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    for aid, first in daemons.items():
        order = urls[first:] + urls[:first]
        with (root / aid / "client.toml").open("a") as fh:
            fh.write("relay_urls = [" + ", ".join(f'"{u}"' for u in order) + "]\n")
    return Fleet(c=c, redis=RedisServer(root / "redis"), ports=ports)


@pytest.fixture
async def fleets() -> AsyncIterator[list[Fleet]]:
    made: list[Fleet] = []
    try:
        yield made
    finally:
        for f in made:
            await f.stop()


async def new_fleet(
    made: list[Fleet], root: Path, relays: int, daemons: dict[str, int], **kw: str
) -> Fleet:
    fleet = await asyncio.to_thread(make_fleet, root, relays, daemons, **kw)
    made.append(fleet)
    await fleet.redis.start()
    for i in range(relays):
        await fleet.start_relay(i)
    for aid in daemons:
        await fleet.start_daemon(aid)
    return fleet


async def assert_each_took_effect_once(fleet: Fleet, accepted: set[str]) -> None:
    """Once nothing more can happen (every message stored and hooked, fr-oclcc's queue
    empty so nothing is redelivered): fr-oclcc's daemon ran its hook once per message, and
    the relays queued one ``delivered`` receipt per message for it-tpc (no daemon)."""
    c = fleet.c

    async def settled() -> bool:
        return (
            set(await fleet.inbox_ids("fr-oclcc")) >= accepted
            and await hooks_finished(c.inbox_path("fr-oclcc")) >= accepted
            and await fleet.client("fr-oclcc", 1).poll() == []
        )

    await until(settled, 60)
    assert sorted(await fleet.inbox_ids("fr-oclcc")) == sorted(accepted)
    daemon = fleet.procs["fr-oclcc"].pid
    runs = await hook_runs(c.hook_log("fr-oclcc"))
    assert Counter(runs) == Counter({HookRun(m, daemon): 1 for m in accepted})
    queued = await receipts_queued(fleet.client("it-tpc", 1), c.net.directory)
    assert queued == Counter({(m, "delivered"): 1 for m in accepted})


async def sender_saw(fleet: Fleet, aid: str, msg_id: str, status: str) -> bool:
    """Did ``aid``'s daemon store a ``status`` receipt for its message?"""
    path = fleet.c.inbox_path(aid)
    if not await asyncio.to_thread(path.exists):
        return False
    inbox = await Inbox.open(path)
    try:
        return any(r.status == status for r in await inbox.sent.timeline(msg_id))
    finally:
        await inbox.close()


# --- tests ----------------------------------------------------------------------------------


async def test_messages_and_receipts_cross_instances(tmp_path: Path, fleets: list[Fleet]) -> None:
    fleet = await new_fleet(fleets, tmp_path, 2, {"fr-oclcc": 0, "it-tpc": 1})
    # it-tpc submits to instance 1, where its own daemon is; fr-oclcc's daemon is on 0.
    there = fleet.seal(0)
    result = await fleet.client("it-tpc", 1).send(there.token)
    assert verify_receipt(result.receipt, fleet.c.net.directory).status == "accepted"
    back = fleet.seal(1, to="it-tpc", sender="fr-oclcc")
    await fleet.client("fr-oclcc", 0).send(back.token)

    async def both_stored() -> bool:
        return await fleet.inbox_ids("fr-oclcc") == [there.id] and await fleet.inbox_ids(
            "it-tpc"
        ) == [back.id]

    await until(both_stored, 30)

    # The delivered receipts travel back across instances to each sender's daemon.
    async def receipts_home() -> bool:
        return await sender_saw(fleet, "it-tpc", there.id, "delivered") and await sender_saw(
            fleet, "fr-oclcc", back.id, "delivered"
        )

    await until(receipts_home, 30)
    timeline = await fleet.client("it-tpc", 0).timeline(there.id)  # any instance answers
    assert timeline.state == "delivered"


async def test_relay_killed_under_load_its_daemon_moves_and_nothing_is_lost(
    tmp_path: Path, fleets: list[Fleet]
) -> None:
    fleet = await new_fleet(fleets, tmp_path, 3, {"fr-oclcc": 0})
    messages = [(s.id, s.token) for s in (fleet.seal(i) for i in range(300))]
    sender = asyncio.create_task(fleet.send_all("it-tpc", messages))

    async def some_stored() -> bool:
        return len(await fleet.inbox_ids("fr-oclcc")) >= 30

    await until(some_stored, 60)
    await fleet.kill("relay-0")  # the daemon's instance, mid-stream, no goodbye
    accepted = await sender
    assert len(accepted) == len(messages)
    await assert_each_took_effect_once(fleet, accepted)


async def test_each_escalation_step_fires_once_across_three_instances(
    tmp_path: Path, fleets: list[Fleet]
) -> None:
    # Nobody is connected: nobody acknowledges, so every message climbs the whole chain
    # (remind 1 s, release 2 s, notify 3 s) while three instances race for its timers.
    fleet = await new_fleet(fleets, tmp_path, 3, {}, policies=SHORT_POLICIES)
    sealed = [fleet.seal(i, fallback=["fr-desk"]) for i in range(12)]
    for k, s in enumerate(sealed):
        await fleet.client("it-tpc", k % 3).send(s.token)
    ids = {s.id for s in sealed}

    async def steps(msg_id: str) -> list[int | None]:
        t = await fleet.client("it-tpc", 0).timeline(msg_id)
        return [
            b.step
            for b in (verify_receipt(x, fleet.c.net.directory).body for x in t.receipts)
            if b.status == "escalated"
        ]

    notified: set[str] = set()

    async def all_notified() -> bool:
        # Each round asks about the messages not yet at step 3, at most 4 rounds a
        # second: 12 timelines every 10 ms would exceed it-tpc's request rate (429).
        await asyncio.sleep(0.25)
        for i in ids - notified:
            if 3 in await steps(i):
                notified.add(i)
        return notified == ids

    await until(all_notified, 40)
    await asyncio.sleep(1.0)  # let any double firing show up

    for msg_id in ids:
        assert await steps(msg_id) == [1, 2, 3]

    async def queued(aid: str) -> list[Any]:
        return await fleet.client(aid, 1).poll(limit=500)

    # What each step queued, counted per message: a second firing would queue it again.
    fr = await queued("fr-oclcc")
    assert sorted(i.id for i in fr if i.reminder) == sorted(ids)  # step 1
    assert sorted(i.id for i in fr if not i.reminder) == sorted(ids)  # the original
    desk = await queued("fr-desk")
    assert sorted(i.id for i in desk) == sorted(ids)  # step 2: released to the fallback
    deputy = await queued("fr-deputy")
    assert sorted(i.id for i in deputy) == sorted(ids)  # step 2: deputy notified
    supervisor = await queued("fr-ca")
    assert sorted(i.id for i in supervisor) == sorted(ids)  # step 3: supervisor notified
    sender = await queued("it-tpc")
    escalated = [
        verify_receipt(i.receipt, fleet.c.net.directory).body for i in sender if i.type == "receipt"
    ]
    assert sorted((b.msg, b.step) for b in escalated) == sorted(
        (i, step) for i in ids for step in (1, 2, 3)
    )


async def test_redis_restarted_under_load_loses_no_accepted_message(
    tmp_path: Path, fleets: list[Fleet]
) -> None:
    fleet = await new_fleet(fleets, tmp_path, 2, {"fr-oclcc": 0})
    messages = [(s.id, s.token) for s in (fleet.seal(i) for i in range(300))]
    sender = asyncio.create_task(fleet.send_all("it-tpc", messages))

    async def some_stored() -> bool:
        return len(await fleet.inbox_ids("fr-oclcc")) >= 30

    await until(some_stored, 60)
    await fleet.redis.kill()  # kill -9: appendfsync always, so every accept is on disk
    await fleet.redis.start()
    accepted = await sender
    assert len(accepted) == len(messages)
    await assert_each_took_effect_once(fleet, accepted)


async def test_redis_down_is_a_503_problem_and_the_relay_recovers_by_itself(
    tmp_path: Path, fleets: list[Fleet]
) -> None:
    fleet = await new_fleet(fleets, tmp_path, 1, {})
    client = fleet.client("it-tpc", 0)
    await client.send(fleet.seal(0).token)
    await fleet.redis.kill()

    body = b'{"envelope": "x.y.z"}'
    url = client.url("/v1/messages")
    headers = client.signed_headers("POST", url, body)
    headers["Content-Type"] = "application/json"
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as resp:
        assert resp.status == 503
        assert resp.headers["Content-Type"] == "application/problem+json"
        assert resp.headers["Retry-After"] == "5"
        problem = await resp.json(content_type=None)
    assert problem["code"] == "store_unavailable" and problem["status"] == 503
    with pytest.raises(UnavailableError):
        await client.send(fleet.seal(1).token)
    async with aiohttp.ClientSession() as http, http.get(fleet.url(0) + "/readyz") as resp:
        assert resp.status == 503

    await fleet.redis.start()
    later = fleet.seal(2)

    async def accepted_again() -> bool:
        try:
            await client.send(later.token)
        except UnavailableError:
            return False
        return True

    await until(accepted_again, 15)  # the same process, not restarted
    async with aiohttp.ClientSession() as http, http.get(fleet.url(0) + "/readyz") as resp:
        assert resp.status == 200
    assert (await client.timeline(later.id)).state == "accepted"


async def test_a_redis_without_the_aof_is_refused_at_start(tmp_path: Path) -> None:
    c = await asyncio.to_thread(write_cluster, tmp_path, [])
    redis = RedisServer(tmp_path / "redis", appendonly="no")
    await redis.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relay.cli",
            "serve",
            "--config",
            str(c.root / "relay.toml"),
            env={**os.environ, "RELAY_STORE": "redis", "RELAY_REDIS_URL": redis.url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1
        lines = err.decode().strip().splitlines()
        assert lines[-1].startswith("relay: error: cannot start: store: redis has appendonly off")
        assert b"listening" not in out
    finally:
        await redis.kill()
