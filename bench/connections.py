"""Idle connected daemons: how much memory does one relay process need to hold N?

Starts a real relay (``relay serve``, SQLite store) and opens N signed WebSocket
connections to ``/v1/stream`` from this process (spread over a few authorities, as if
N daemons were connected), waits until every one got its ``hello``, then reads the relay
process's resident memory (VmRSS) and its CPU while the connections sit idle.

Target (DESIGN.md): 10,000 idle connected daemons in at most 1 GiB RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench.e2e import (  # noqa: E402
    build_network,
    cpu_seconds,
    free_port,
    identity,
    names,
    relay_env,
    rss_mib,
)
from clients.client import RelayClient  # noqa: E402
from keys import wire  # noqa: E402
from keys.encoding import now_ms  # noqa: E402


async def hold(url: str, args: argparse.Namespace, t0: int, relay_pid: int) -> dict[str, float]:
    _, recipients = names(args)
    # Clients without a connection limit (a RelayClient pools 64 by default).
    clients = [RelayClient(url, identity(a, t0), max_connections=0) for a in recipients]
    sockets = []
    sem = asyncio.Semaphore(200)
    base_rss = rss_mib(relay_pid)

    async def connect(i: int) -> None:
        async with sem:
            ws = await clients[i % len(clients)].connect_stream(heartbeat=30.0)
            async with asyncio.timeout(30):
                hello = await ws.receive()
            assert isinstance(hello, wire.Hello)
            sockets.append(ws)

    start = time.perf_counter()
    await asyncio.gather(*(connect(i) for i in range(args.connections)))
    connect_s = time.perf_counter() - start
    await asyncio.sleep(2)
    c0, w0 = cpu_seconds(relay_pid), time.monotonic()
    await asyncio.sleep(args.idle_s)
    idle_cpu = (cpu_seconds(relay_pid) - c0) / (time.monotonic() - w0)
    rss = rss_mib(relay_pid)
    for ws in sockets:
        await ws.close()
    for c in clients:
        await c.close()
    return {
        "connections": len(sockets),
        "connect_s": round(connect_s, 2),
        "relay_rss_mib": round(rss, 1),
        "relay_rss_before_mib": round(base_rss, 1),
        "kib_per_connection": round((rss - base_rss) * 1024 / max(1, len(sockets)), 1),
        "idle_cpu_percent": round(idle_cpu * 100, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument(
        "--recipients", type=int, default=10, help="authorities the connections belong to"
    )
    p.add_argument("--senders", type=int, default=1)
    p.add_argument("--idle-s", type=float, default=10.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.connections + 1000)), hard)
    )
    args.store = "sqlite"
    t0 = now_ms() - 60_000
    with tempfile.TemporaryDirectory(prefix="cpar-conns-") as tmp:
        work = Path(tmp)
        net = build_network(work, args, t0)
        port = free_port()
        env = relay_env(
            work,
            net["root_key"],
            port,
            data="relay-data",
            # Every simulated daemon connects from 127.0.0.1: lift the per-source bound and
            # the rate limit, which protect a real relay but would measure themselves here.
            RELAY_MAX_UNAUTHENTICATED_PER_SOURCE="1000000",
            RELAY_MAX_UNAUTHENTICATED_CONNECTIONS="1000000",
            RELAY_RATE_LIMITS='{"default": {"per_second": 1e9, "burst": 1000000000}}',
        )
        relay = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "serve"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            preexec_fn=_raise_nofile(args.connections),
        )
        try:
            assert relay.stdout is not None
            if b"listening" not in relay.stdout.readline():
                raise SystemExit("relay did not start")
            figures = asyncio.run(hold(f"http://127.0.0.1:{port}", args, t0, relay.pid))
        finally:
            relay.send_signal(signal.SIGTERM)
            try:
                relay.wait(timeout=30)
            except subprocess.TimeoutExpired:
                relay.kill()
    figures["target_mib"] = 1024
    figures["pass"] = (
        figures["connections"] >= args.connections and figures["relay_rss_mib"] <= 1024
    )
    print(
        json.dumps(figures) if args.json else "\n".join(f"{k:>22}: {v}" for k, v in figures.items())
    )
    return 0


def _raise_nofile(n: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * n + 1000)), hard))

    return apply


if __name__ == "__main__":
    sys.exit(main())
