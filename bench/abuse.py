"""Unauthenticated abuse against a real relay while an authority works through it.

Starts ``relay serve`` (SQLite store) under ``prlimit --nofile=1024:1024`` (systemd's
default), then, while one authority submits notices and reads its inbox at a steady
pace, runs from other source addresses (127.0.0.2 and up, as attackers would come from
elsewhere):

* 2,000 unauthenticated WebSocket upgrades of ``/v1/stream``;
* a 200-connection slowloris (a request head trickled one header every second);
* 1,100 idle sockets opened and held;
* 60 unsigned 8 MiB request bodies announced and sent slowly.

It prints the authority's operations, failures and p50/p99 latency (before and during
the attack) and the relay's resident memory before, at its peak, and after.
Targets (issue "hostile edges"): 0 authority failures; RSS back within 50 MB of before.

    .venv/bin/python bench/abuse.py [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.e2e import build_network, free_port, identity, names, relay_env, rss_mib  # noqa: E402
from clients.client import RelayClient  # noqa: E402
from keys.encoding import now_ms  # noqa: E402
from keys.envelope import seal  # noqa: E402


class Authority:
    """One authority submitting a notice and reading its inbox, 10 rounds a second."""

    def __init__(self, url: str, t0: int, directory: Any, args: argparse.Namespace) -> None:
        senders, recipients = names(args)
        self.me = identity(senders[0], t0)
        self.to = recipients[0]
        self.url = url
        self.directory = directory
        self.latencies: dict[str, list[float]] = {"before": [], "during": []}
        self.failures: dict[str, list[str]] = {"before": [], "during": []}
        self.phase = "before"

    async def run(self, stop: asyncio.Event) -> None:
        """Each round on a new connection, as a `notice send` process or a reconnecting
        daemon would: an authority that kept one connection open would not notice an
        exhausted file table."""
        while not stop.is_set():
            sealed = seal(
                self.me,
                self.directory,
                to=[self.to],
                content={"kind": "free_text", "text": "x" * 1000},
                now=now_ms(),
                priority="urgent",
            )
            client = RelayClient(self.url, self.me)
            try:
                for op in (client.send(sealed.token), client.poll(wait=0)):
                    start = time.perf_counter()
                    try:
                        async with asyncio.timeout(10):
                            await op
                    except Exception as exc:  # every failure counts, whatever it is
                        self.failures[self.phase].append(f"{type(exc).__name__}: {exc}"[:200])
                    else:
                        self.latencies[self.phase].append(time.perf_counter() - start)
            finally:
                await client.close()
            await asyncio.sleep(0.1)


def _source(i: int, per: int, first: int = 2) -> str:
    return f"127.0.0.{first + i // per}"


async def ws_flood(url: str, n: int, counts: dict[str, int]) -> None:
    sem = asyncio.Semaphore(100)

    async def one(i: int) -> None:
        async with sem:
            conn = aiohttp.TCPConnector(local_addr=(_source(i, 50), 0), force_close=True)
            async with aiohttp.ClientSession(connector=conn) as http:
                try:
                    ws = await http.ws_connect(
                        url + "/v1/stream", timeout=aiohttp.ClientWSTimeout(ws_close=5)
                    )
                    await ws.close()
                    counts["ws_upgraded"] += 1
                except aiohttp.WSServerHandshakeError as exc:
                    counts[f"ws_{exc.status}"] += 1
                except (aiohttp.ClientError, OSError, TimeoutError):
                    counts["ws_refused"] += 1

    await asyncio.gather(*(one(i) for i in range(n)))


async def _connect(
    port: int, source: str, counts: dict[str, int], attack: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A TCP connection to the relay from ``source``; None (counted) if refused."""
    try:
        return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError:
        counts[f"{attack}_refused"] += 1
        return None


async def slowloris(port: int, n: int, seconds: float, counts: dict[str, int]) -> None:
    async def one(i: int) -> None:
        streams = await _connect(port, _source(i, 40, 60), counts, "slowloris")
        if streams is None:
            return
        reader, writer = streams
        try:
            writer.write(b"GET /v1/inbox HTTP/1.1\r\nHost: relay\r\n")
            end = time.monotonic() + seconds
            while time.monotonic() < end and not reader.at_eof():
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                await asyncio.sleep(1.0)
            counts["slowloris_cut_off" if reader.at_eof() else "slowloris_survived"] += 1
        except OSError:
            counts["slowloris_cut_off"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one(i) for i in range(n)))


async def idle_sockets(port: int, n: int, seconds: float, counts: dict[str, int]) -> None:
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def one(i: int) -> None:
        streams = await _connect(port, _source(i, 55, 100), counts, "idle")
        if streams is not None:
            held.append(streams)

    await asyncio.gather(*(one(i) for i in range(n)))
    counts["idle_opened"] += len(held)  # TCP connected: the relay may close it at once
    await asyncio.sleep(seconds)
    for reader, writer in held:
        # Still open at the end of the attack, or closed by the relay (refused, evicted
        # or timed out): a read of what is buffered tells.
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(0.01):
                await reader.read(65536)
        counts["idle_closed_by_relay" if reader.at_eof() else "idle_still_open"] += 1
        writer.close()


async def stalled_bodies(
    port: int, n: int, mib: int, seconds: float, counts: dict[str, int]
) -> None:
    size = mib * 1024 * 1024

    async def one(i: int) -> None:
        streams = await _connect(port, _source(i, 30, 200), counts, "stalled")
        if streams is None:
            return
        reader, writer = streams
        try:
            writer.write(
                b"POST /v1/messages HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {size}\r\n\r\n".encode()
            )
            chunk = b"x" * 65536
            for _ in range(size // len(chunk) - 1):  # all but the last 64 KiB, then stall
                writer.write(chunk)
                await writer.drain()
            counts["stalled_sent"] += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    head = await reader.readuntil(b"\r\n")
                    counts[f"stalled_answered_{head.split()[1].decode()}"] += 1
        except (OSError, asyncio.IncompleteReadError):
            counts["stalled_cut_off"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one(i) for i in range(n)))


async def attack(
    url: str, port: int, relay_pid: int, t0: int, directory: Any, args: argparse.Namespace
) -> dict[str, Any]:
    authority = Authority(url, t0, directory, args)
    stop = asyncio.Event()
    work = asyncio.create_task(authority.run(stop))
    await asyncio.sleep(args.warmup_s)
    rss_before = rss_mib(relay_pid)
    peak = rss_before
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_mib(relay_pid))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    counts: Counter[str] = Counter()
    authority.phase = "during"
    started = time.perf_counter()

    async def idle_later() -> None:
        await asyncio.sleep(2.0)  # once the bodies are in flight
        await idle_sockets(port, args.idle, args.attack_s, counts)

    await asyncio.gather(
        stalled_bodies(port, args.stalled, args.stalled_mib, args.attack_s, counts),
        ws_flood(url, args.ws, counts),
        slowloris(port, args.slowloris, args.attack_s, counts),
        idle_later(),
    )
    attack_s = time.perf_counter() - started
    authority.phase = "after"
    authority.latencies["after"], authority.failures["after"] = [], []
    await asyncio.sleep(args.settle_s)
    sampling = False
    await sampler
    rss_after = rss_mib(relay_pid)
    stop.set()
    await work

    def pct(xs: list[float], q: float) -> float:
        if not xs:
            return float("nan")
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 1)

    out: dict[str, Any] = {"attack_s": round(attack_s, 1)}
    for phase in ("before", "during", "after"):
        lat, fail = authority.latencies[phase], authority.failures[phase]
        out[f"authority_{phase}"] = {
            "ops": len(lat) + len(fail),
            "failures": len(fail),
            "p50_ms": pct(lat, 0.5),
            "p99_ms": pct(lat, 0.99),
            "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
        }
        if fail:
            out[f"authority_{phase}"]["first_failures"] = fail[:3]
    out["relay_rss_mib"] = {
        "before": round(rss_before, 1),
        "peak": round(peak, 1),
        "after": round(rss_after, 1),
    }
    out["attackers"] = dict(sorted(counts.items()))
    failures = sum(len(v) for v in authority.failures.values())
    out["pass"] = failures == 0 and rss_after - rss_before <= 50
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--ws", type=int, default=2000, help="unauthenticated WebSocket upgrades")
    p.add_argument("--slowloris", type=int, default=200, help="slowloris connections")
    p.add_argument("--idle", type=int, default=1100, help="idle sockets held")
    p.add_argument("--stalled", type=int, default=60, help="stalled unsigned bodies")
    p.add_argument("--stalled-mib", type=int, default=8)
    p.add_argument("--nofile", type=int, default=1024, help="the relay's open-file limit")
    p.add_argument("--attack-s", type=float, default=20.0, help="how long sockets are held")
    p.add_argument("--warmup-s", type=float, default=3.0)
    p.add_argument("--settle-s", type=float, default=5.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    args.senders, args.recipients = 1, 1
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    t0 = now_ms() - 60_000
    with tempfile.TemporaryDirectory(prefix="cpar-abuse-") as tmp:
        work = Path(tmp)
        net = build_network(work, args, t0)
        port = free_port()
        env = relay_env(work, net["root_key"], port, data="relay-data")
        relay = subprocess.Popen(
            [
                "prlimit",
                f"--nofile={args.nofile}:{args.nofile}",
                "--",
                sys.executable,
                "-m",
                "relay.cli",
                "serve",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=open(work / "relay.log", "wb"),  # noqa: SIM115 - closed with the folder
        )
        try:
            assert relay.stdout is not None
            if b"listening" not in relay.stdout.readline():
                raise SystemExit("relay did not start: " + (work / "relay.log").read_text())
            figures = asyncio.run(
                attack(f"http://127.0.0.1:{port}", port, relay.pid, t0, net["directory"], args)
            )
        finally:
            relay.send_signal(signal.SIGTERM)
            try:
                relay.wait(timeout=30)
            except subprocess.TimeoutExpired:
                relay.kill()
        log_lines = (work / "relay.log").read_text().splitlines()
    figures["relay_log_lines"] = len(log_lines)
    figures["relay_log_sample"] = log_lines[:6]
    print(json.dumps(figures, indent=None if args.json else 2))
    return 0 if figures["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
