"""End to end with real processes: `relay serve`, `notice daemon`, SQLite, kill -9.

These show the promises an operator relies on: a message accepted by the relay is
delivered to the recipient exactly once, whatever process is killed and restarted in
between. "Once" is counted in effects, not in the inbox (keyed by message id, it could
not show a second copy): the runs of the recipient's delivery hook, and the `delivered`
receipts the relay queues for the sender.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.errors import ClientError
from clients.hooks import HookRunner
from keys.encoding import now_ms
from keys.envelope import seal
from keys.receipts import verify_receipt
from tests.procfixture import (
    Cluster,
    HookRun,
    hook_runs,
    hooks_finished,
    queued,
    receipts_queued,
    write_cluster,
)
from tests.waiting import until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HOOK_CONCURRENCY = inspect.signature(HookRunner).parameters["concurrency"].default
"""How many hook runs a daemon has in hand at once (the daemon uses the default)."""


@pytest.fixture
def cluster_files(tmp_path: Path) -> Cluster:
    return write_cluster(tmp_path, ["fr-oclcc", "it-tpc"])


@pytest.fixture
async def cluster(cluster_files: Cluster) -> AsyncIterator[Cluster]:
    try:
        yield cluster_files
    finally:
        await cluster_files.stop_all()


def _seal(c: Cluster, i: int) -> tuple[str, str]:
    s = seal(
        c.net["it-tpc"],
        c.net.directory,
        to=["fr-oclcc"],
        content={"kind": "free_text", "text": f"notice {i}"},
        now=now_ms(),
        priority="urgent",
    )
    return s.id, s.token


async def _send_all(c: Cluster, tokens: list[tuple[str, str]]) -> set[str]:
    """Send everything, retrying through relay restarts; returns the ids accepted."""
    accepted: set[str] = set()
    for msg_id, token in tokens:

        async def sent(msg_id: str = msg_id, token: str = token) -> bool:
            try:
                await c.client("it-tpc").send(token)
            except ClientError:
                return False  # the relay is restarting
            accepted.add(msg_id)
            return True

        await until(sent, 30)
    return accepted


async def _effects_settled(c: Cluster, accepted: set[str]) -> None:
    """Wait until nothing more can happen: every accepted message stored, its hook run
    recorded, and the recipient's relay queue empty (so nothing is redelivered)."""

    async def settled() -> bool:
        return (
            set(await c.inbox_ids("fr-oclcc")) >= accepted
            and await hooks_finished(c.inbox_path("fr-oclcc")) >= accepted
            and await c.client("fr-oclcc").poll() == []
        )

    await until(settled, 90)


async def _assert_one_delivered_receipt_each(c: Cluster, accepted: set[str]) -> None:
    """The sender was told ``delivered`` once per message (its daemon is not running,
    so every notification the relay queued for it is still there to count)."""
    queued = await receipts_queued(c.client("it-tpc"), c.net.directory)
    assert queued == Counter({(m, "delivered"): 1 for m in accepted})


async def test_delivery_and_signed_receipts_across_processes(cluster: Cluster) -> None:
    await cluster.start_relay()
    await cluster.start_daemon("fr-oclcc")
    await cluster.start_daemon("it-tpc")
    msg_id, token = _seal(cluster, 0)
    result = await cluster.client("it-tpc").send(token)
    assert verify_receipt(result.receipt, cluster.net.directory).status == "accepted"

    async def delivered() -> bool:
        return (await cluster.client("it-tpc").timeline(msg_id)).state == "delivered"

    await until(delivered, 30)
    assert await cluster.inbox_ids("fr-oclcc") == [msg_id]
    timeline = await cluster.client("it-tpc").timeline(msg_id)
    statuses = [verify_receipt(t, cluster.net.directory).status for t in timeline.receipts]
    assert statuses == ["accepted", "delivered"]

    async def hooked() -> bool:
        return await hooks_finished(cluster.inbox_path("fr-oclcc")) == {msg_id}

    await until(hooked, 30)
    runs = await hook_runs(cluster.hook_log("fr-oclcc"))
    assert runs == [HookRun(msg_id, cluster.pid("fr-oclcc"))]
    assert await hook_runs(cluster.hook_log("it-tpc")) == []  # it only sent
    # SIGTERM: the daemons stop cleanly.
    assert await cluster.kill("fr-oclcc", signal.SIGTERM) == 0


async def test_daemon_killed_mid_stream_gets_every_message_exactly_once(cluster: Cluster) -> None:
    await cluster.start_relay()
    await cluster.start_daemon("fr-oclcc")
    messages = [_seal(cluster, i) for i in range(300)]
    # The first 20 until their hooks have run: the daemon is connected and the rest reach
    # it as a stream (not as one backlog it would take in a single batch).
    first = await _send_all(cluster, messages[:20])

    async def first_hooked() -> bool:
        return await hooks_finished(cluster.inbox_path("fr-oclcc")) == first

    await until(first_hooked, 60)
    sender = asyncio.create_task(_send_all(cluster, messages[20:]))
    daemon = cluster.procs["fr-oclcc"]

    async def caught_mid_stream() -> bool:
        """Freeze the daemon (it can neither store nor acknowledge while stopped) and
        look for a message whose ``delivered`` receipt the relay has already stored but
        which is not acknowledged yet: it will be pushed again (and its receipt sent
        again) after the restart."""
        daemon.send_signal(signal.SIGSTOP)
        told = {i.id for i in await queued(cluster.client("it-tpc"))}
        pending = {i.id for i in await queued(cluster.client("fr-oclcc"))}
        if pending & told:
            return True
        daemon.send_signal(signal.SIGCONT)
        return False

    await until(caught_mid_stream, 60)
    killed = cluster.pid("fr-oclcc")
    await cluster.kill("fr-oclcc", signal.SIGKILL)  # mid-stream, no goodbye
    # What the killed daemon had recorded as done (its inbox is committed on disk).
    done_before = await hooks_finished(cluster.inbox_path("fr-oclcc"))
    await cluster.start_daemon("fr-oclcc")
    restarted = cluster.pid("fr-oclcc")
    accepted = first | await sender
    assert len(accepted) == len(messages)
    await _effects_settled(cluster, accepted)

    ids = await cluster.inbox_ids("fr-oclcc")
    assert sorted(ids) == sorted(accepted)
    runs = await hook_runs(cluster.hook_log("fr-oclcc"))
    # A run the killed daemon had just started may have lost its parent before the shell
    # read it (it then names init): whatever is not the restarted daemon's is the first's.
    assert killed in {r.daemon_pid for r in runs}
    before = Counter(r.msg_id for r in runs if r.daemon_pid != restarted)
    after = Counter(r.msg_id for r in runs if r.daemon_pid == restarted)
    # Each message's hook ran exactly once in the daemon that recorded it: a hook run the
    # killed daemon had recorded never runs again, whatever is redelivered...
    assert after == Counter(accepted - done_before)
    assert set(before) >= done_before and set(before.values()) == {1}
    # ...and the only second runs are the window no hook can close (hence the message id
    # a command gets, and a webhook's Idempotency-Key): a run the killed daemon had
    # started but not yet recorded is run again (at most the runs it had in hand).
    in_flight = set(before) - done_before
    assert len(in_flight) <= HOOK_CONCURRENCY
    assert Counter(r.msg_id for r in runs) == Counter(
        {m: 2 if m in in_flight else 1 for m in accepted}
    )
    await _assert_one_delivered_receipt_each(cluster, accepted)


async def test_relay_killed_under_load_loses_no_accepted_message(cluster: Cluster) -> None:
    await cluster.start_relay()
    await cluster.start_daemon("fr-oclcc")
    daemon = cluster.pid("fr-oclcc")
    messages = [_seal(cluster, i) for i in range(300)]
    sender = asyncio.create_task(_send_all(cluster, messages))

    async def some_accepted() -> bool:
        return len(await cluster.inbox_ids("fr-oclcc")) >= 20

    await until(some_accepted, 60)
    await cluster.kill("relay", signal.SIGKILL)
    await cluster.start_relay()
    accepted = await sender
    assert len(accepted) == len(messages)
    await _effects_settled(cluster, accepted)

    assert sorted(await cluster.inbox_ids("fr-oclcc")) == sorted(accepted)
    # The daemon lived through it: every message's hook ran exactly once, redeliveries
    # after the relay's restart included.
    runs = await hook_runs(cluster.hook_log("fr-oclcc"))
    assert Counter(runs) == Counter({HookRun(m, daemon): 1 for m in accepted})
    await _assert_one_delivered_receipt_each(cluster, accepted)
