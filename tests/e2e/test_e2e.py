"""End to end with real processes: `relay serve`, `notice daemon`, SQLite, kill -9.

These show the promises an operator relies on: a message accepted by the relay is
delivered to the recipient's inbox exactly once, whatever process is killed and
restarted in between.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.errors import ClientError
from keys.encoding import now_ms
from keys.envelope import seal
from keys.receipts import verify_receipt
from tests.procfixture import Cluster, write_cluster
from tests.relayfixture import until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


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
        for _ in range(200):
            try:
                await c.client("it-tpc").send(token)
                accepted.add(msg_id)
                break
            except ClientError:
                await asyncio.sleep(0.05)  # the relay is restarting
    return accepted


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
    # SIGTERM: the daemons stop cleanly.
    assert await cluster.kill("fr-oclcc", signal.SIGTERM) == 0


async def test_daemon_killed_mid_stream_gets_every_message_exactly_once(cluster: Cluster) -> None:
    await cluster.start_relay()
    await cluster.start_daemon("fr-oclcc")
    messages = [_seal(cluster, i) for i in range(300)]
    sender = asyncio.create_task(_send_all(cluster, messages))

    async def some_stored() -> bool:
        return len(await cluster.inbox_ids("fr-oclcc")) >= 20

    await until(some_stored, 60)
    await cluster.kill("fr-oclcc", signal.SIGKILL)  # mid-stream, no goodbye
    await asyncio.sleep(0.3)
    await cluster.start_daemon("fr-oclcc")
    accepted = await sender
    assert len(accepted) == len(messages)

    async def all_stored() -> bool:
        return len(await cluster.inbox_ids("fr-oclcc")) >= len(messages)

    await until(all_stored, 90)
    ids = await cluster.inbox_ids("fr-oclcc")
    assert sorted(ids) == sorted(accepted)  # every one, and each once

    async def queue_drained() -> bool:
        return await cluster.client("fr-oclcc").poll() == []

    await until(queue_drained, 30)


async def test_relay_killed_under_load_loses_no_accepted_message(cluster: Cluster) -> None:
    await cluster.start_relay()
    await cluster.start_daemon("fr-oclcc")
    messages = [_seal(cluster, i) for i in range(300)]
    sender = asyncio.create_task(_send_all(cluster, messages))

    async def some_accepted() -> bool:
        return len(await cluster.inbox_ids("fr-oclcc")) >= 20

    await until(some_accepted, 60)
    await cluster.kill("relay", signal.SIGKILL)
    await asyncio.sleep(0.5)
    await cluster.start_relay()
    accepted = await sender
    assert len(accepted) == len(messages)

    async def all_delivered() -> bool:
        return len(await cluster.inbox_ids("fr-oclcc")) >= len(accepted)

    await until(all_delivered, 90)
    assert sorted(await cluster.inbox_ids("fr-oclcc")) == sorted(accepted)
