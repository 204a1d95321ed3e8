"""Escalation timers at scale: N pending timers, how late do they fire?

Prepares a relay database holding N accepted messages, each with a pending reminder
timer, their deadlines spread evenly over ``--spread-s`` seconds starting ``--lead-s``
seconds after the relay starts. Then it runs the real relay (``relay serve``) on it and:

* measures the relay's CPU while idle with all N timers pending (before the first is
  due);
* lets every timer fire, and reads back from the database when each reminder's signed
  ``escalated`` receipt was made: lateness = receipt time - deadline.

Prints p50/p99/max lateness and the idle CPU; ``--json`` makes the last line one JSON
object. Target (DESIGN.md): every timer fires within 1 s of its deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.e2e import PASS, cpu_seconds, free_port, identity  # noqa: E402
from keys.directory import sign_directory  # noqa: E402
from keys.encoding import b64e, now_ms, uuid7  # noqa: E402
from keys.keystore import save_keystore  # noqa: E402
from keys.models import DirectoryEntry  # noqa: E402
from relay.store.base import STEP_EXPIRE, STEP_REMIND, NewMessage  # noqa: E402
from relay.store.sqlite import SQLiteStore  # noqa: E402

RECIPIENTS = [f"recipient-{i:02d}" for i in range(10)]
FAR = 365 * 86_400_000


def prepare(work: Path, n: int, first_due: int, spread_ms: int, t0: int) -> str:
    root = identity("root", t0, "root")
    relay = identity("relay-bench", t0, "relay")
    people = [identity(a, t0) for a in ["sender", *RECIPIENTS]]
    entries = []
    for ident, role in [(relay, "relay"), *((p, "national_body") for p in people)]:
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
    (work / "directory").mkdir()
    (work / "directory" / "v0001.jws").write_text(d.token)
    save_keystore(work / "relay.ks", relay, PASS, strength="test")
    (work / "relay.pass").write_text(PASS)

    async def fill() -> None:
        store = SQLiteStore(work / "relay-data" / "relay.sqlite3")
        await store.start()
        batch: list[NewMessage] = []
        for i in range(n):
            due = first_due + (spread_ms * i) // max(1, n - 1)
            msg_id = uuid7(ms=t0)
            policy = json.dumps(
                {
                    "priority": "urgent",
                    "steps": [[1, due], [2, due + FAR], [3, due + 2 * FAR]],
                    "working_hours": False,
                }
            )
            batch.append(
                NewMessage(
                    id=msg_id,
                    sender="sender",
                    to=(RECIPIENTS[i % len(RECIPIENTS)],),
                    fallbacks=(),
                    envelope=f"bench.{msg_id}.sig",
                    env_hash=f"{i:064x}",
                    created=t0,
                    expires=t0 + 2 * FAR,
                    priority="urgent",
                    ack_by=None,
                    accepted_at=t0,
                    accepted_receipt="bench",
                    policy=policy,
                    timers=((STEP_REMIND, due), (STEP_EXPIRE, t0 + 2 * FAR)),
                )
            )
            if len(batch) == 5000:
                await store.accept(batch)
                batch = []
        if batch:
            await store.accept(batch)
        await store.close()

    asyncio.run(fill())
    return b64e(root.signing_key().public)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--timers", type=int, default=100_000)
    p.add_argument(
        "--spread-s", type=float, default=60.0, help="deadlines spread over this many seconds"
    )
    p.add_argument(
        "--lead-s", type=float, default=25.0, help="seconds from relay start to the first deadline"
    )
    p.add_argument("--idle-s", type=float, default=10.0, help="idle CPU measured over this window")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cpar-timers-") as tmp:
        work = Path(tmp)
        t0 = now_ms() - 60_000
        prep_start = time.monotonic()
        # Deadlines are set relative to when the relay will have started (prep + start-up).
        estimate = max(5.0, args.timers / 20_000)
        first_due = now_ms() + int((estimate + args.lead_s) * 1000)
        root_key = prepare(work, args.timers, first_due, int(args.spread_s * 1000), t0)
        prep_s = time.monotonic() - prep_start
        port = free_port()
        env = {
            **os.environ,
            "RELAY_PORT": str(port),
            "RELAY_DATA_DIR": str(work / "relay-data"),
            "RELAY_DIRECTORY_DIR": str(work / "directory"),
            "RELAY_ROOT_KEY": root_key,
            "RELAY_KEYSTORE": str(work / "relay.ks"),
            "RELAY_KEYSTORE_PASSPHRASE_FILE": str(work / "relay.pass"),
            "RELAY_LOG_LEVEL": "ERROR",
        }
        relay = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "serve"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert relay.stdout is not None
            if b"listening" not in relay.stdout.readline():
                raise SystemExit("relay did not start")
            until_first = (first_due - now_ms()) / 1000
            idle_window = min(args.idle_s, max(1.0, until_first - 2))
            time.sleep(1.0)
            c0, w0 = cpu_seconds(relay.pid), time.monotonic()
            time.sleep(idle_window)
            idle_cpu = (cpu_seconds(relay.pid) - c0) / (time.monotonic() - w0)
            last_due = first_due + int(args.spread_s * 1000)
            while now_ms() < last_due + 3000:
                time.sleep(0.5)
            time.sleep(2.0)
        finally:
            relay.send_signal(signal.SIGTERM)
            try:
                relay.wait(timeout=30)
            except subprocess.TimeoutExpired:
                relay.kill()
        db = sqlite3.connect(work / "relay-data" / "relay.sqlite3")
        rows = db.execute(
            "SELECT r.at, m.policy FROM receipts r JOIN messages m ON m.id = r.msg_id "
            "WHERE r.status = 'escalated' AND r.step = 1"
        ).fetchall()
        pending_left = db.execute("SELECT COUNT(*) FROM timers WHERE step = 1").fetchone()[0]
        db.close()
    late_ms = sorted(at - json.loads(policy)["steps"][0][1] for at, policy in rows)
    q = statistics.quantiles(late_ms, n=100) if len(late_ms) > 1 else [0.0] * 99
    figures = {
        "timers": args.timers,
        "fired": len(late_ms),
        "not_fired": pending_left,
        "early": sum(1 for x in late_ms if x < 0),
        "late_p50_ms": round(q[49], 1),
        "late_p99_ms": round(q[98], 1),
        "late_max_ms": late_ms[-1] if late_ms else None,
        "within_1s": sum(1 for x in late_ms if 0 <= x <= 1000),
        "idle_cpu_percent": round(idle_cpu * 100, 2),
        "spread_s": args.spread_s,
        "prepare_s": round(prep_s, 1),
    }
    print(
        json.dumps(figures) if args.json else "\n".join(f"{k:>18}: {v}" for k, v in figures.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
