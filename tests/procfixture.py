"""Real processes for end-to-end tests: ``relay serve`` and ``notice daemon``.

Everything runs on loopback with the real clock; keys are generated at the current
time. Processes are started with asyncio subprocesses (no blocking on the loop) and are
always killed at teardown.

Every daemon has one real delivery hook, a ``command`` that appends one line per run
(the message id and the pid of the daemon that ran it) to ``<aid>/hook-runs.log``, so
a test counts hook runs, an effect, rather than rows keyed by message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from clients.client import QueueItem, RelayClient
from clients.store import Inbox
from keys import wire
from keys.directory import Directory
from keys.encoding import b64e, now_ms
from keys.keystore import save_keystore
from keys.receipts import verify_receipt
from tests.netfixture import Network, make_network

PASS = "e2e test passphrase"
HOOK = "count-runs"
"""The name of each daemon's counting hook."""
HOOK_LOG = "hook-runs.log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """Config files for one relay and some daemons (written before the loop runs)."""

    root: Path
    net: Network
    port: int
    daemons: list[str]
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    clients: dict[str, RelayClient] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inbox_path(self, aid: str) -> Path:
        return self.root / aid / "data" / "inbox.sqlite3"

    def hook_log(self, aid: str) -> Path:
        return self.root / aid / HOOK_LOG

    def pid(self, name: str) -> int:
        """The process id of a running relay or daemon."""
        return self.procs[name].pid

    def client(self, aid: str) -> RelayClient:
        if aid not in self.clients:
            self.clients[aid] = RelayClient(self.url, self.net[aid])
        return self.clients[aid]

    async def start_relay(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relay.cli",
            "serve",
            "--config",
            str(self.root / "relay.toml"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if b"listening" not in line:
            err = await proc.stderr.read() if proc.stderr else b""
            raise RuntimeError(f"relay did not start: {line!r} {err.decode()[-2000:]}")
        self.procs["relay"] = proc

    async def start_daemon(self, aid: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clients.cli",
            "--config",
            str(self.root / aid / "client.toml"),
            "daemon",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self.procs[aid] = proc

    async def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        return await asyncio.wait_for(proc.wait(), 30)

    async def stop_all(self) -> None:
        for c in self.clients.values():
            await c.close()
        for name in list(self.procs):
            await self.kill(name, signal.SIGKILL)

    async def inbox_ids(self, aid: str) -> list[str]:
        path = self.inbox_path(aid)
        if not await asyncio.to_thread(path.exists):
            return []
        inbox = await Inbox.open(path)
        try:
            return [m.id for m in await inbox.received.list(limit=1_000_000, state=None)]
        finally:
            await inbox.close()


@dataclass(frozen=True)
class HookRun:
    """One run of a daemon's counting hook: which message, run by which daemon process."""

    msg_id: str
    daemon_pid: int


async def hook_runs(log: Path) -> list[HookRun]:
    """Every run of the counting hook recorded in ``log``, in order."""
    if not await asyncio.to_thread(log.exists):
        return []
    text = await asyncio.to_thread(log.read_text, encoding="ascii")
    runs = []
    for line in text.splitlines():
        msg_id, pid = line.split()
        runs.append(HookRun(msg_id, int(pid)))
    return runs


async def hooks_finished(inbox_path: Path) -> set[str]:
    """Ids of the messages whose counting-hook job the daemon has recorded as done."""
    if not await asyncio.to_thread(inbox_path.exists):
        return set()
    inbox = await Inbox.open(inbox_path)
    try:
        done = set()
        for m in await inbox.received.list(limit=1_000_000, state=None):
            jobs = await inbox.hook_jobs.of_message(m.id)
            if any(j.hook == HOOK and j.state == "done" for j in jobs):
                done.add(m.id)
        return done
    finally:
        await inbox.close()


async def queued(client: RelayClient) -> list[QueueItem]:
    """Every item the relay holds for ``client``'s authority (not acknowledged yet)."""
    items: list[QueueItem] = []
    while page := await client.poll(after=items[-1].seq if items else 0, limit=500):
        items.extend(page)
    return items


async def receipts_queued(client: RelayClient, directory: Directory) -> Counter[tuple[str, str]]:
    """What the relay queued for ``client``'s authority (its daemon not running): every
    receipt item, verified, counted per (message id, status). One item is one notification
    the sender gets; a receipt stored twice would be queued twice."""
    seen: Counter[tuple[str, str]] = Counter()
    for item in await queued(client):
        if isinstance(item, wire.ReceiptItem):
            body = verify_receipt(item.receipt, directory).body
            seen[body.msg, body.status] += 1
    return seen


def _hook_config(log: Path) -> str:
    """The counting hook, as a top-level TOML key (a file may be appended to later)."""
    script = f'echo "$CPAR_MESSAGE_ID $PPID" >> {json.dumps(str(log))}'
    hook = {"type": "command", "name": HOOK, "argv": ["/bin/sh", "-c", script]}
    items = ", ".join(f"{k} = {json.dumps(v)}" for k, v in hook.items())
    return f"hooks = [{{ {items}, shares_onward = false }}]\nhook_interval_s = 0.1\n"


def write_cluster(root: Path, daemons: list[str]) -> Cluster:
    """Generate a network at the current time and write relay and daemon configs."""
    net = make_network(now=now_ms())
    root_key = b64e(net.root.signing_key().public)
    (root / "directory").mkdir(parents=True)
    (root / "directory" / "v0001.jws").write_text(net.directory.token)
    save_keystore(root / "relay.ks", net.relay, PASS, strength="test")
    (root / "pass").write_text(PASS)
    port = free_port()
    (root / "relay.toml").write_text(
        f'port = {port}\ndata_dir = "relay-data"\ndirectory_dir = "directory"\n'
        f'root_key = "{root_key}"\nkeystore = "relay.ks"\nkeystore_passphrase_file = "pass"\n'
        'log_level = "WARNING"\nplain_http = true  # loopback only; TLS: tests/e2e/test_tls.py\n'
    )
    for aid in daemons:
        d = root / aid
        d.mkdir()
        save_keystore(d / "authority.ks", net[aid], PASS, strength="test")
        (d / "client.toml").write_text(
            f'relay_url = "http://127.0.0.1:{port}"\nkeystore = "authority.ks"\n'
            f'passphrase_file = "../pass"\nroot_key = "{root_key}"\ndata_dir = "data"\n'
            'reconnect_min_s = 0.1\nreconnect_max_s = 0.5\nlog_level = "WARNING"\n'
            + _hook_config(d / HOOK_LOG)
        )
    return Cluster(root=root, net=net, port=port, daemons=daemons)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
