"""The outbox with real processes: what a person does while the relay is down is not lost.

`relay serve` is stopped, a person runs `notice send` or `notice ack` (both exit 0 and
say what is pending), the relay is started again, and with no second command the
daemon finishes the job. Effects are counted as in test_e2e: the recipient's hook runs,
the receipts on the relay's timeline and in the sender's local records.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clients.store import Inbox
from keys.receipts import verify_receipt
from tests.procfixture import Cluster, HookRun, hook_runs, hooks_finished, write_cluster
from tests.waiting import until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# Escalation in seconds: a message nobody acknowledges reaches its last step (notify)
# within the test; the first step comes late enough for a relay restart to fit before.
POLICIES = (
    '[policies.urgent]\nremind_after = "20s"\nrelease_after = "22s"\nnotify_after = "24s"\n'
    '[policies.high]\nremind_after = "2h"\nrelease_after = "8h"\nnotify_after = "1d"\n'
    '[policies.routine]\nremind_after = "2d"\nrelease_after = "5d"\nnotify_after = "10d"\n'
)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    def write() -> Cluster:
        c = write_cluster(tmp_path, ["fr-oclcc", "it-tpc"])
        with (c.root / "relay.toml").open("a") as fh:
            fh.write(POLICIES)
        return c

    c = await asyncio.to_thread(write)
    try:
        yield c
    finally:
        await c.stop_all()


async def notice(c: Cluster, aid: str, *args: str) -> tuple[int, str, str]:
    """Run `notice --config <aid's config> ARGS` as a person would (a new process)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clients.cli",
        "--config",
        str(c.root / aid / "client.toml"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def notice_json(c: Cluster, aid: str, *args: str) -> Any:
    code, out, err = await notice(c, aid, *args, "--json")
    assert code == 0, err
    return json.loads(out)


async def local_receipts(c: Cluster, aid: str, msg_id: str) -> Counter[str]:
    """The receipts about ``msg_id`` recorded in ``aid``'s inbox, counted per status."""
    inbox = await Inbox.open(c.inbox_path(aid))
    try:
        return Counter(r.status for r in await inbox.sent.timeline(msg_id))
    finally:
        await inbox.close()


async def relay_statuses(c: Cluster, msg_id: str) -> list[str]:
    timeline = await c.client("it-tpc").timeline(msg_id)
    return [verify_receipt(t, c.net.directory).status for t in timeline.receipts]


async def test_a_notice_sent_while_the_relay_is_down_is_delivered_once_after_it_returns(
    cluster: Cluster,
) -> None:
    await cluster.start_relay()
    await cluster.start_daemon("fr-oclcc")
    await cluster.start_daemon("it-tpc")
    pinned = cluster.root / "it-tpc" / "data" / "directory-current.jws"

    async def has_pinned() -> bool:
        return await asyncio.to_thread(pinned.exists)

    await until(has_pinned, 30)  # the sender's daemon has the directory to seal with
    assert await cluster.kill("relay", signal.SIGTERM) == 0

    sent = await notice_json(
        cluster, "it-tpc", "send", "--to", "fr-oclcc", "--priority", "urgent",
        "--kind", "free_text", "--text", "sent while the relay is down",
    )  # fmt: skip
    assert sent["state"] == "queued"
    msg_id = sent["id"]
    [row] = await notice_json(cluster, "it-tpc", "sent")
    assert row["id"] == msg_id and row["state"] == "queued"
    code, _, err = await notice(
        cluster, "it-tpc", "send", "--no-queue", "--to", "fr-oclcc",
        "--kind", "free_text", "--text", "not queued",
    )  # fmt: skip
    assert code == 1 and err.startswith("notice: error: nothing was sent") and err.count("\n") == 1

    # Someone watches it live, from before the relay returns.
    watch = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients.cli", "watch", msg_id[:10], "--json", "--interval", "0.2",
        "--config", str(cluster.root / "it-tpc" / "client.toml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert watch.stdout is not None and watch.stderr is not None
    first = json.loads(await asyncio.wait_for(watch.stdout.readline(), 30))
    assert first == {"event": "queued", "id": msg_id}

    await cluster.start_relay()  # no command after this: the daemons do the rest

    watched: list[dict[str, Any]] = []
    while not any(e.get("status") == "delivered" for e in watched):
        line = await asyncio.wait_for(watch.stdout.readline(), 60)
        assert line, "watch ended early"
        watched.append(json.loads(line))
    receipts = [e for e in watched if e["event"] == "receipt"]
    assert [e["status"] for e in receipts] == ["accepted", "delivered"]
    assert all(e["verified"] for e in receipts)
    watch.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
    assert await asyncio.wait_for(watch.wait(), 30) == 130
    assert "Traceback" not in (await watch.stderr.read()).decode()

    async def delivered() -> bool:
        return (
            await hooks_finished(cluster.inbox_path("fr-oclcc")) == {msg_id}
            and (await local_receipts(cluster, "it-tpc", msg_id))["delivered"] >= 1
        )

    await until(delivered, 60)
    assert await cluster.inbox_ids("fr-oclcc") == [msg_id]  # the same id, nothing else
    assert await hook_runs(cluster.hook_log("fr-oclcc")) == [
        HookRun(msg_id, cluster.pid("fr-oclcc"))
    ]
    assert await relay_statuses(cluster, msg_id) == ["accepted", "delivered"]
    assert await local_receipts(cluster, "it-tpc", msg_id) == Counter(
        {"accepted": 1, "delivered": 1}
    )
    [row] = await notice_json(cluster, "it-tpc", "sent")
    assert row["id"] == msg_id and row["state"] == "delivered"


async def test_an_acknowledgement_made_while_the_relay_is_down_reaches_the_sender(
    cluster: Cluster,
) -> None:
    await cluster.start_relay()
    await cluster.start_daemon("fr-oclcc")
    await cluster.start_daemon("it-tpc")
    ids = []
    for text in ("taken in hand while the relay is down", "nobody answers this one"):
        sent = await notice_json(
            cluster, "it-tpc", "send", "--to", "fr-oclcc", "--priority", "urgent",
            "--kind", "free_text", "--text", text,
        )  # fmt: skip
        assert sent["state"] == "accepted"
        ids.append(sent["id"])
    msg_id, control = ids

    async def both_received() -> bool:
        return set(await cluster.inbox_ids("fr-oclcc")) == set(ids)

    await until(both_received, 30)
    assert await cluster.kill("relay", signal.SIGTERM) == 0

    code, out, err = await notice(cluster, "fr-oclcc", "ack", msg_id[:13], "--person", "Lt. Durand")
    assert code == 0, err
    assert "the daemon will send it" in " ".join(out.split())
    inbox = {m["id"]: m for m in await notice_json(cluster, "fr-oclcc", "inbox")}
    assert inbox[msg_id]["state"] == "acknowledged"
    assert inbox[msg_id]["receipt_upload"] == "pending"

    await cluster.start_relay()  # no command after this: the daemon sends the receipt

    async def acknowledged() -> bool:
        return bool(
            (await notice_json(cluster, "it-tpc", "status", msg_id))["state"] == "acknowledged"
        )

    await until(acknowledged, 60)
    status = await notice_json(cluster, "it-tpc", "status", msg_id)
    assert status["all_verified"] and status["receipts"][-1]["person"] == "Lt. Durand"

    # The message nobody acknowledged escalates to its last step; by then every step of
    # the acknowledged one was due too, and none of them happened.
    async def control_notified() -> bool:
        return (await relay_statuses(cluster, control)).count("escalated") == 3

    await until(control_notified, 90)
    assert await relay_statuses(cluster, msg_id) == ["accepted", "delivered", "acknowledged"]
    inbox = {m["id"]: m for m in await notice_json(cluster, "fr-oclcc", "inbox", "--all")}
    assert inbox[msg_id]["receipt_upload"] is None  # confirmed by the relay
