"""End-to-end benchmark: senders -> relay -> recipient daemons -> delivered receipts back.

Runs a real relay (``relay serve`` in its own process, on the chosen store), M real
recipient daemons (``clients.daemon.Daemon``, one process holding all of them, each with
its own SQLite inbox), and S senders in this process. Every message is a 1 KiB notice
signed and sealed by its sender; the daemon verifies, decrypts, stores and returns a
signed ``delivered`` receipt; the sender's clock stops when that receipt, verified,
is back over its own WebSocket.

Figures: ``msgs_per_s`` (first send to last delivered receipt), ``p50_ms``/``p99_ms``
(send to delivered, per message), ``relay_cpu_us_per_msg`` (user+system CPU of every relay
process over the run, divided by messages). With ``--json`` the last line is one JSON object.

``--store redis`` starts a private ``redis-server`` (AOF, ``appendfsync always``, a free
port, files in the temp folder) and reports its CPU too (``redis_cpu_us_per_msg``).
``--instances N`` runs N relay processes on that Redis: sender i submits to instance
i mod N, recipient daemon i connects to instance i mod N (with the others as failover).

Targets (docs/DESIGN targets): throughput >= 1.5x NATS JetStream on the same workload;
p99 <= 10 ms at a paced 1,000 msg/s; relay CPU <= 150 us per message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clients.client import RelayClient  # noqa: E402
from clients.config import ClientSettings  # noqa: E402
from clients.daemon import Daemon  # noqa: E402
from clients.errors import StreamClosedError  # noqa: E402
from keys import wire  # noqa: E402
from keys.directory import sign_directory  # noqa: E402
from keys.encoding import b64e, now_ms  # noqa: E402
from keys.envelope import seal  # noqa: E402
from keys.identity import Identity  # noqa: E402
from keys.keystore import save_keystore  # noqa: E402
from keys.models import DirectoryEntry  # noqa: E402
from keys.receipts import verify_receipt  # noqa: E402

PASS = "bench passphrase"  # noqa: S105 - a throwaway benchmark keystore


class SeededRng:
    """Deterministic key material, so the daemons' process derives the same identities."""

    def __init__(self, label: str) -> None:
        self.label, self.counter = label.encode(), 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.label + self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        return out[:n]


def identity(aid: str, t0: int, kind: str = "authority") -> Identity:
    return Identity.generate(aid, kind=kind, now=t0, rng=SeededRng(f"bench:{aid}"))  # type: ignore[arg-type]


def names(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    return [f"sender-{i:02d}" for i in range(args.senders)], [
        f"recipient-{i:02d}" for i in range(args.recipients)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    """A process's resident memory (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- setup ------------------------------------------------------------------------------


def build_network(work: Path, args: argparse.Namespace, t0: int) -> dict[str, Any]:
    senders, recipients = names(args)
    root = identity("root", t0, "root")
    relay = identity("relay-bench", t0, "relay")
    entries = []
    for ident, role in [(relay, "relay")] + [
        (identity(a, t0), "national_body") for a in senders + recipients
    ]:
        pub = ident.public_keys()
        entries.append(
            DirectoryEntry(
                id=ident.id,
                name=ident.id,
                country="XX",
                role=role,  # type: ignore[arg-type]
                signing_keys=pub.signing_keys,
                encryption_keys=pub.encryption_keys,
            )
        )
    d = sign_directory(root, network="bench", authorities=entries, previous=None, now=t0)
    (work / "directory").mkdir(parents=True)
    (work / "directory" / "v0001.jws").write_text(d.token)
    save_keystore(work / "relay.ks", relay, PASS, strength="test")
    (work / "relay.pass").write_text(PASS)
    return {"root_key": b64e(root.signing_key().public), "directory": d}


def start_redis(work: Path, appendfsync: str = "always") -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server: AOF on (fsync before every reply by default), no RDB."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--store redis needs redis-server on PATH")
    port = free_port()
    (work / "redis").mkdir()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(work / "redis"),
            "--appendonly",
            "yes",
            "--appendfsync",
            appendfsync,
            "--save",
            "",
            "--logfile",
            str(work / "redis" / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("redis-server did not start")
        time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def relay_env(work: Path, root_key: str, port: int, *, data: str, **extra: str) -> dict[str, str]:
    """The environment of a benchmark's `relay serve` (plain HTTP on loopback)."""
    return {
        **os.environ,
        "RELAY_PORT": str(port),
        "RELAY_DATA_DIR": str(work / data),
        "RELAY_DIRECTORY_DIR": str(work / "directory"),
        "RELAY_ROOT_KEY": root_key,
        "RELAY_KEYSTORE": str(work / "relay.ks"),
        "RELAY_KEYSTORE_PASSPHRASE_FILE": str(work / "relay.pass"),
        "RELAY_LOG_LEVEL": "WARNING",
        "RELAY_PLAIN_HTTP": "true",  # loopback benchmark
        **extra,
    }


def start_relay(
    work: Path, args: argparse.Namespace, root_key: str, index: int = 0, redis_url: str = ""
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = relay_env(
        work,
        root_key,
        port,
        data=f"relay-data-{index}",
        RELAY_REDIS_URL=redis_url,
        RELAY_STORE=args.store,
        RELAY_REDIS_DURABILITY=args.redis_appendfsync,
        # Every simulated authority connects from 127.0.0.1 and sends flat out: lift the
        # per-source connection bound and the per-authority rate limit, which protect a
        # real relay but would measure themselves here.
        RELAY_MAX_UNAUTHENTICATED_PER_SOURCE="1000000",
        RELAY_MAX_UNAUTHENTICATED_CONNECTIONS="1000000",
        RELAY_RATE_LIMITS='{"default": {"per_second": 1e9, "burst": 1000000000}}',
        RELAY_DELIVERY_WINDOW="4000",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening" not in line:
        proc.kill()
        raise SystemExit(
            f"relay did not start: {line}{proc.stderr.read().decode() if proc.stderr else ''}"
        )
    return proc, f"http://127.0.0.1:{port}"


# --- daemons process ----------------------------------------------------------------------


async def run_daemons(conf: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    daemons = []
    urls = conf["urls"]
    for i, aid in enumerate(conf["recipients"]):
        first = i % len(urls)
        settings = ClientSettings(
            relay_urls=urls[first:] + urls[:first],
            root_key=conf["root_key"],
            data_dir=Path(conf["work"]) / aid,
            reconnect_min_s=0.1,
            reconnect_max_s=1.0,
            log_level="WARNING",
        )
        daemons.append(Daemon(settings, identity(aid, conf["t0"])))
    tasks = [asyncio.create_task(d.run(stop)) for d in daemons]
    await asyncio.gather(*(d.connected.wait() for d in daemons))
    print("daemons ready", flush=True)
    await asyncio.gather(*tasks)


# --- senders (this process) ---------------------------------------------------------------


async def run_senders(
    args: argparse.Namespace, urls: list[str], directory: Any, t0: int
) -> dict[str, Any]:
    senders, recipients = names(args)
    ids = {a: identity(a, t0) for a in senders}
    clients = {a: RelayClient(urls[n % len(urls)], ids[a]) for n, a in enumerate(senders)}
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()
    text = "x" * 1000
    total = args.messages

    streams: dict[str, Any] = {}
    replies: dict[int, asyncio.Future[Any]] = {}
    refs = iter(range(1 << 62))

    async def listen(aid: str) -> None:
        ws = streams[aid] = await clients[aid].connect_stream()
        while True:
            try:
                events = await ws.receive_many()
            except StreamClosedError:
                return
            seqs = []
            for item in events:
                if isinstance(item, wire.SubmittedFrame | wire.ErrorFrame):
                    fut = replies.pop(item.ref, None) if isinstance(item.ref, int) else None
                    if fut is not None and not fut.done():
                        fut.set_result(item)
                    continue
                if not isinstance(item, wire.ReceiptItem):
                    continue
                seqs.append(item.seq)
                receipt = verify_receipt(item.receipt, directory)
                if receipt.status == "delivered" and receipt.body.msg in sent_at:
                    latencies.append(time.perf_counter() - sent_at.pop(receipt.body.msg))
                    if len(latencies) >= total:
                        done.set()
            if seqs:
                await ws.ack(seqs)

    listeners = [asyncio.create_task(listen(a)) for a in senders]
    await asyncio.sleep(0.5)
    per_sender = total // len(senders) // args.batch
    interval = len(senders) / args.rate if args.rate > 0 else 0.0
    inflight = asyncio.Semaphore(args.concurrency)

    async def one(aid: str, i: int) -> None:
        async with inflight:
            batch = []
            for k in range(args.batch):
                to = recipients[(i * args.batch + k) % len(recipients)]
                sealed = seal(
                    ids[aid],
                    directory,
                    to=[to],
                    content={"kind": "free_text", "text": text},
                    now=now_ms(),
                    priority="urgent",
                )
                sent_at[sealed.id] = time.perf_counter()
                batch.append(sealed.token)
            if args.submit == "ws":  # over the sender's session: no request signature each
                ref = next(refs)
                fut = replies[ref] = asyncio.get_running_loop().create_future()
                await streams[aid].submit(batch, ref=ref)
                answer = await fut
                if isinstance(answer, wire.ErrorFrame):
                    raise RuntimeError(answer.problem.detail)
                for r in answer.results:
                    if isinstance(r, wire.ProblemResult):
                        raise RuntimeError(r.problem.detail)
                return
            if args.batch == 1:
                await clients[aid].send(batch[0])
                return
            for r in await clients[aid].send_batch(batch):
                if isinstance(r, Exception):
                    raise r

    def _report(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            print(f"submit failed: {task.exception()!r}", file=sys.stderr)

    async def sender(aid: str, offset: int) -> None:
        start = time.perf_counter()
        pending: set[asyncio.Task[None]] = set()
        for i in range(per_sender):
            if interval:
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            t = asyncio.create_task(one(aid, offset + i))
            pending.add(t)
            t.add_done_callback(_report)
            t.add_done_callback(pending.discard)
            if not interval and len(pending) >= args.concurrency:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*pending)

    total = per_sender * len(senders) * args.batch
    t_start = time.perf_counter()
    await asyncio.gather(*(sender(a, n * per_sender) for n, a in enumerate(senders)))
    try:
        await asyncio.wait_for(done.wait(), timeout=max(60.0, total / 100))
    except TimeoutError:
        print(f"warning: only {len(latencies)}/{total} delivered receipts arrived", file=sys.stderr)
    elapsed = time.perf_counter() - t_start
    for t in listeners:
        t.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    for c in clients.values():
        await c.close()
    lat_ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(lat_ms, n=100) if len(lat_ms) >= 2 else [0.0] * 99
    return {
        "messages": total,
        "delivered": len(latencies),
        "elapsed_s": round(elapsed, 3),
        "msgs_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(q[49], 2),
        "p99_ms": round(q[98], 2),
        "max_ms": round(lat_ms[-1], 2) if lat_ms else 0.0,
    }


def ed25519_verify_us(rounds: int = 5, n: int = 2000) -> float:
    """The CPU time of one Ed25519 verification of a 1 KiB message here and now (median
    of rounds): the unit the relay's CPU per message is compared with. CPU time, as the
    relay's figure is, so that another process taking the core meanwhile does not
    inflate it (the wall clock did, by up to half, on these shared machines)."""
    import nacl.bindings

    pk, sk = nacl.bindings.crypto_sign_seed_keypair(bytes(32))
    signed = nacl.bindings.crypto_sign(b"x" * 1024, sk)
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(n):
            nacl.bindings.crypto_sign_open(signed, pk)
        times.append((time.thread_time() - start) / n * 1e6)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="End-to-end benchmark: S senders seal 1 KiB notices, a real relay accepts "
        "them, M real daemons verify/decrypt/store and return signed delivered receipts. "
        "Prints msgs/s (send to delivered receipt at the sender), p50/p99 latency and relay "
        "CPU per message."
    )
    p.add_argument("--messages", type=int, default=5000, help="total messages (default 5000)")
    p.add_argument(
        "--rate", type=float, default=0, help="paced msgs/s in total; 0 = as fast as possible"
    )
    p.add_argument("--senders", type=int, default=2)
    p.add_argument("--recipients", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=64, help="outstanding submits per sender")
    p.add_argument(
        "--batch", type=int, default=1, help="envelopes per submit request (1 = one request each)"
    )
    p.add_argument(
        "--submit",
        choices=["http", "ws"],
        default="http",
        help="submit over signed HTTP requests, or as submit frames on the sender's WebSocket",
    )
    p.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    p.add_argument(
        "--instances",
        type=int,
        default=1,
        help="relay processes (redis store only); senders and daemons are spread over them",
    )
    p.add_argument(
        "--redis-appendfsync",
        choices=["always", "everysec"],
        default="always",
        help="the private Redis's appendfsync, and the relays' redis_durability (default always)",
    )
    p.add_argument("--json", action="store_true", help="last line: one JSON object of figures")
    p.add_argument("--daemons-config", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.daemons_config:
        asyncio.run(run_daemons(json.loads(Path(args.daemons_config).read_text())))
        return 0

    if args.instances < 1 or (args.instances > 1 and args.store != "redis"):
        p.error("--instances above 1 needs --store redis (an SQLite file has one relay)")
    t0 = now_ms() - 60_000
    with tempfile.TemporaryDirectory(prefix="cpar-bench-") as tmp:
        work = Path(tmp)
        net = build_network(work, args, t0)
        redis, redis_url = (
            start_redis(work, args.redis_appendfsync) if args.store == "redis" else (None, "")
        )
        relays: list[subprocess.Popen[bytes]] = []
        urls: list[str] = []
        daemons = None
        try:
            for i in range(args.instances):
                relay, url = start_relay(work, args, net["root_key"], i, redis_url)
                relays.append(relay)
                urls.append(url)
            _, recipients = names(args)
            conf = {
                "urls": urls,
                "root_key": net["root_key"],
                "work": str(work),
                "t0": t0,
                "recipients": recipients,
            }
            (work / "daemons.json").write_text(json.dumps(conf))
            daemons = subprocess.Popen(
                [sys.executable, __file__, "--daemons-config", str(work / "daemons.json")],
                stdout=subprocess.PIPE,
                cwd=ROOT,
            )
            assert daemons.stdout is not None
            if b"ready" not in daemons.stdout.readline():
                raise SystemExit("daemons did not start")
            cpu0 = [cpu_seconds(r.pid) for r in relays]
            rcpu0 = cpu_seconds(redis.pid) if redis is not None else 0.0
            figures = asyncio.run(run_senders(args, urls, net["directory"], t0))
            cpu = sum(cpu_seconds(r.pid) - c for r, c in zip(relays, cpu0, strict=True))
            rcpu = cpu_seconds(redis.pid) - rcpu0 if redis is not None else 0.0
        finally:
            procs = [daemons, *relays, redis]
            for proc in procs:
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                if proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=20)
                    if proc.poll() is None:
                        proc.kill()
    delivered = max(1, figures["delivered"])
    figures["relay_cpu_us_per_msg"] = round(cpu * 1e6 / delivered, 1)
    verify_us = ed25519_verify_us()
    figures["ed25519_verify_us"] = round(verify_us, 1)
    figures["relay_cpu_per_verify"] = round(cpu * 1e6 / delivered / verify_us, 1)
    if args.store == "redis":
        figures["redis_cpu_us_per_msg"] = round(rcpu * 1e6 / delivered, 1)
        figures["redis_appendfsync"] = args.redis_appendfsync
    figures.update(
        store=args.store,
        instances=args.instances,
        senders=args.senders,
        recipients=args.recipients,
        rate=args.rate,
        concurrency=args.concurrency,
        submit=args.submit,
        batch=args.batch,
    )
    if args.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
