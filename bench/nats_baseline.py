"""Baseline: the same end-to-end workload carried by NATS JetStream (nats-py).

Senders seal 1 KiB notices exactly as the relay benchmark does and publish them to a
file-backed JetStream stream (publish waits for the stream's ack, like the relay's
accepted receipt). Recipient consumers (a separate process, durable pull consumers)
verify, decrypt, store into the same SQLite inbox as the real daemon, sign a
``delivered`` receipt and publish it to a receipts stream; the sender's clock stops
when it has pulled and verified that receipt. No relay logic (directory checks,
routing rules, accepted receipts, escalation) is involved: it is the transport's cost.

Needs a NATS server with JetStream on 127.0.0.1:4222 (present on these machines).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import nats  # noqa: E402
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig  # noqa: E402

from bench.e2e import build_network, identity, names  # noqa: E402
from clients.store import Inbox  # noqa: E402
from keys.directory import Directory  # noqa: E402
from keys.encoding import b64d, now_ms  # noqa: E402
from keys.envelope import open_envelope, seal  # noqa: E402
from keys.receipts import sign_receipt, verify_receipt  # noqa: E402

URL = "nats://127.0.0.1:4222"


async def setup_streams(tag: str) -> None:
    nc = await nats.connect(URL)
    js = nc.jetstream()
    for name, subj in ((f"N{tag}", f"n{tag}.>"), (f"R{tag}", f"r{tag}.>")):
        with contextlib.suppress(Exception):  # absent is fine
            await js.delete_stream(name)
        await js.add_stream(StreamConfig(name=name, subjects=[subj], storage=StorageType.FILE))
    await nc.close()


async def consumers(conf: dict[str, Any]) -> None:
    tag = conf["tag"]
    directory = Directory.verify(conf["directory"], [b64d(conf["root_key"])])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    nc = await nats.connect(URL)
    js = nc.jetstream()

    async def run(aid: str) -> None:
        ident = identity(aid, conf["t0"])
        inbox = await Inbox.open(Path(conf["work"]) / f"nats-{aid}.sqlite3")
        sub = await js.pull_subscribe(
            f"n{tag}.{aid}",
            durable=f"d{aid}",
            stream=f"N{tag}",
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=4000),
        )
        while not stop.is_set():
            try:
                msgs = await sub.fetch(256, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            now = now_ms()
            opened = await asyncio.to_thread(
                lambda ms=msgs, n=now: [
                    open_envelope(m.data.decode(), directory, ident, now=n) for m in ms
                ]
            )
            await inbox.received.store_many(
                [(o, m.data.decode()) for o, m in zip(opened, msgs, strict=True)], received_at=now
            )
            receipts = await asyncio.to_thread(
                lambda op=opened, n=now: [
                    sign_receipt(
                        ident, msg_id=o.header.id, envelope_hash=o.hash, status="delivered", now=n
                    )
                    for o in op
                ]
            )
            for o, r in zip(opened, receipts, strict=True):
                await js.publish(f"r{tag}.{o.header.from_}", r.encode())
            for m in msgs:
                await m.ack()
        await inbox.close()

    tasks = [asyncio.create_task(run(a)) for a in conf["recipients"]]
    print("consumers ready", flush=True)
    await asyncio.gather(*tasks)
    await nc.close()


async def senders(
    args: argparse.Namespace, conf: dict[str, Any], directory: Directory
) -> dict[str, Any]:
    tag = conf["tag"]
    snames, recipients = names(args)
    ids = {a: identity(a, conf["t0"]) for a in snames}
    nc = await nats.connect(URL)
    js = nc.jetstream()
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    total = (args.messages // len(snames)) * len(snames)
    done = asyncio.Event()
    stop = asyncio.Event()

    async def listen(aid: str) -> None:
        sub = await js.pull_subscribe(f"r{tag}.{aid}", durable=f"s{aid}", stream=f"R{tag}")
        while not stop.is_set():
            try:
                msgs = await sub.fetch(256, timeout=0.2)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for m in msgs:
                r = verify_receipt(m.data.decode(), directory)
                if r.body.msg in sent_at:
                    latencies.append(time.perf_counter() - sent_at.pop(r.body.msg))
                await m.ack()
            if len(latencies) >= total:
                done.set()

    listeners = [asyncio.create_task(listen(a)) for a in snames]
    per = total // len(snames)
    text = "x" * 1000
    sem = asyncio.Semaphore(args.concurrency)

    async def one(aid: str, i: int) -> None:
        async with sem:
            to = recipients[i % len(recipients)]
            sealed = seal(
                ids[aid],
                directory,
                to=[to],
                content={"kind": "free_text", "text": text},
                now=now_ms(),
                priority="urgent",
            )
            sent_at[sealed.id] = time.perf_counter()
            await js.publish(f"n{tag}.{to}", sealed.token.encode())

    async def paced(aid: str, offset: int) -> None:
        """``--rate`` msgs/s in total, as bench/e2e.py paces (each sender its share)."""
        interval = len(snames) / args.rate
        start = time.perf_counter()
        tasks = []
        for i in range(per):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(aid, offset + i)))
        await asyncio.gather(*tasks)

    t0 = time.perf_counter()
    if args.rate > 0:
        await asyncio.gather(*(paced(a, n * per) for n, a in enumerate(snames)))
    else:
        await asyncio.gather(
            *(one(a, n * per + i) for n, a in enumerate(snames) for i in range(per))
        )
    try:
        await asyncio.wait_for(done.wait(), timeout=max(60.0, total / 100))
    except TimeoutError:
        print(f"warning: {len(latencies)}/{total} receipts", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    stop.set()
    await asyncio.gather(*listeners, return_exceptions=True)
    await nc.close()
    lat = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [0.0] * 99
    return {
        "transport": "nats-jetstream",
        "messages": total,
        "delivered": len(lat),
        "elapsed_s": round(elapsed, 3),
        "msgs_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(q[49], 2),
        "p99_ms": round(q[98], 2),
        "rate": args.rate,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="NATS JetStream baseline for bench/e2e.py (same crypto, same inbox)."
    )
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--senders", type=int, default=2)
    p.add_argument("--recipients", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument(
        "--rate", type=float, default=0, help="paced msgs/s in total; 0 = as fast as possible"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--consumers-config", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.consumers_config:
        asyncio.run(consumers(json.loads(Path(args.consumers_config).read_text())))
        return 0
    t0 = now_ms() - 60_000
    tag = f"b{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="cpar-nats-") as tmp:
        work = Path(tmp)
        net = build_network(work, args, t0)
        asyncio.run(setup_streams(tag))
        _, recipients = names(args)
        conf = {
            "tag": tag,
            "t0": t0,
            "work": tmp,
            "recipients": recipients,
            "root_key": net["root_key"],
            "directory": net["directory"].token,
        }
        (work / "c.json").write_text(json.dumps(conf))
        proc = subprocess.Popen(
            [sys.executable, __file__, "--consumers-config", str(work / "c.json")],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            if b"ready" not in proc.stdout.readline():
                raise SystemExit("consumers did not start")
            figures = asyncio.run(senders(args, conf, net["directory"]))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(
        json.dumps(figures) if args.json else "\n".join(f"{k:>14}: {v}" for k, v in figures.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
