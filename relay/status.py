"""What operators see: the relay's health as metadata only, for ``/ops``, ``/metrics`` and
``relay status``.

:func:`build_snapshot` reads the hub, the store and the directory and returns one JSON
document: per authority (every authority in the directory) whether a daemon is
connected, when it was last seen and last answered a probe, its queue depth, the age of
its oldest unacknowledged item, its open escalations and its recent delivery latency;
the open escalations with their timelines; and the escalation timers. Nothing in it
comes from an envelope's content (the relay has none), and no envelope or receipt token
is included: statuses, authority ids and times only.

:func:`run_status` is the client side of ``relay status``: it fetches that document from
``GET /ops/snapshot`` and prints it as tables.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keys.errors import KeysError
from keys.jws import unverified_payload
from relay.core.escalation import OVERDUE_AFTER_MS, STEP_NAMES
from relay.store.base import MessageRecord, ReceiptRecord, Store

if TYPE_CHECKING:
    from rich.console import Console

    from relay.core.metrics import Metrics
    from relay.core.relay import RelayCore

ESCALATION_LIMIT = 100
"""At most this many open escalations (newest first) are listed with their timelines."""
TRACK_MAX = 256
"""Delivery latency: at most this many recent messages are followed at a time."""
TRACK_HORIZON_MS = 15 * 60_000
"""A message not answered by every recipient within this long is no longer followed."""
SAMPLES_PER_AUTHORITY = 200
RECIPIENT_STATUSES = frozenset({"delivered", "acknowledged", "rejected"})

Json = dict[str, Any]
Recent = tuple[str, str, tuple[str, ...], int]
"""(message id, sender, recipients incl. fallbacks, accepted at ms), as RelayCore.health()."""


# -- delivery latency --------------------------------------------------------------------


def percentile(values: Iterable[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..1); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(p * len(ordered)))
    return ordered[rank - 1]


class LatencyTracker:
    """Recent delivery latency per recipient authority: bounded in memory and in reads.

    Fed with the latest accepted messages (``RelayCore.health()["recent"]``). Each one is
    followed, by reading its receipts, until every recipient has answered, it expired,
    or it is older than :data:`TRACK_HORIZON_MS`; at most :data:`TRACK_MAX` messages are
    followed at once and :data:`SAMPLES_PER_AUTHORITY` latencies kept per authority. A
    sample is the time from acceptance to the relay receiving the recipient's first
    receipt (delivered, or acknowledged/rejected if that came first).
    """

    def __init__(self) -> None:
        self.samples: dict[str, deque[float]] = {}
        self._following: OrderedDict[str, tuple[set[str], int]] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._lock = asyncio.Lock()

    def stats(self, authority: str) -> tuple[float | None, float | None, int]:
        """(p50 seconds, p95 seconds, number of samples)."""
        values = self.samples.get(authority, ())
        return percentile(values, 0.5), percentile(values, 0.95), len(values)

    async def refresh(self, store: Store, recent: Sequence[Recent], now: int) -> None:
        async with self._lock:
            for msg_id, _sender, recipients, accepted_at in reversed(recent):  # oldest first
                if msg_id in self._finished or msg_id in self._following:
                    continue
                self._following[msg_id] = (set(recipients), accepted_at)
                while len(self._following) > TRACK_MAX:
                    self._finish(self._following.popitem(last=False)[0])
            for msg_id, (waiting, accepted_at) in list(self._following.items()):
                if now - accepted_at > TRACK_HORIZON_MS:
                    self._finish(msg_id)
                    continue
                done = False
                for receipt in await store.receipts(msg_id):
                    if receipt.status in RECIPIENT_STATUSES and receipt.signer in waiting:
                        waiting.discard(receipt.signer)
                        latency = max(0, receipt.received_at - accepted_at) / 1000
                        self.samples.setdefault(
                            receipt.signer, deque(maxlen=SAMPLES_PER_AUTHORITY)
                        ).append(latency)
                    elif receipt.status == "expired":
                        done = True
                if done or not waiting:
                    self._finish(msg_id)

    def _finish(self, msg_id: str) -> None:
        self._following.pop(msg_id, None)
        self._finished[msg_id] = None
        while len(self._finished) > 4 * TRACK_MAX:
            self._finished.popitem(last=False)


# -- snapshot ----------------------------------------------------------------------------


def _receipt_details(record: ReceiptRecord, relay_id: str) -> Json:
    """Step and reason of a relay-signed receipt (its own metadata), nothing else."""
    if record.signer != relay_id:
        return {}
    try:
        body = unverified_payload(record.token, what="receipt")
    except KeysError:
        return {}
    out: Json = {}
    step = body.get("step") if isinstance(body, dict) else None
    if isinstance(step, int):
        out["step"] = STEP_NAMES.get(step, str(step))
    reason = body.get("reason") if isinstance(body, dict) else None
    if isinstance(reason, str):
        out["reason"] = reason
    return out


def timeline(record: MessageRecord, receipts: Sequence[ReceiptRecord], relay_id: str) -> list[Json]:
    """Statuses, who and when: the accepted receipt first, then the others as received."""
    events: list[Json] = [
        {"status": "accepted", "by": relay_id, "at": record.accepted_at, "received_at": None}
    ]
    for r in receipts:
        events.append(
            {
                "status": r.status,
                "by": r.signer,
                "at": r.at,
                "received_at": r.received_at,
                **_receipt_details(r, relay_id),
            }
        )
    return events


def message_summary(
    record: MessageRecord, receipts: Sequence[ReceiptRecord], relay_id: str
) -> Json:
    """A message's metadata and timeline (never the envelope or a receipt token)."""
    return {
        "id": record.id,
        "sender": record.sender,
        "to": list(record.to),
        "fallbacks": list(record.fallbacks),
        "released": list(record.released),
        "priority": record.priority,
        "state": record.state,
        "created": record.created,
        "accepted_at": record.accepted_at,
        "expires": record.expires,
        "ack_by": record.ack_by,
        "escalation_step": STEP_NAMES.get(record.escalation_step)
        if record.escalation_step
        else None,
        "envelope_hash": record.env_hash,
        "timeline": timeline(record, receipts, relay_id),
    }


async def message_timeline(core: RelayCore, msg_id: str) -> Json | None:
    record = await core.store.get_message(msg_id)
    if record is None:
        return None
    receipts = await core.store.receipts(msg_id)
    return message_summary(record, receipts, core.identity.id)


def _probe(core: RelayCore, authority: str, now: int) -> tuple[int | None, int | None, bool | None]:
    """(last answered ms, round trip ms, reachable) from the prober, if this relay has one."""
    answers = getattr(core, "probes", None)
    at = answers.get(authority) if isinstance(answers, Mapping) else None
    at = at if isinstance(at, int) and not isinstance(at, bool) else None
    prober = getattr(core, "prober", None)
    rtts = getattr(prober, "rtt_ms", None)
    rtt = rtts.get(authority) if isinstance(rtts, Mapping) else None
    rtt = rtt if isinstance(rtt, int) and not isinstance(rtt, bool) else None
    reachable: bool | None = None
    check = getattr(prober, "reachable", None)
    if callable(check):
        try:
            reachable = bool(check(authority, now))
        except Exception:  # a prober in the making must not break the dashboard
            reachable = None
    return at, rtt, reachable


async def refresh_gauges(core: RelayCore, metrics: Metrics) -> None:
    """Set the gauges from the store and the hub (called on each /metrics scrape)."""
    now = core.clock()
    stats = await core.store.queue_stats()
    pending, overdue, _ = await core.store.timer_stats(now, overdue_after_ms=OVERDUE_AFTER_MS)
    oldest = min((s.oldest_enqueued_at for s in stats if s.oldest_enqueued_at), default=None)
    metrics.pending.set(sum(s.depth for s in stats))
    metrics.oldest_unacked.set(max(0, now - oldest) / 1000 if oldest is not None else 0)
    metrics.connected.set(core.hub.count())
    metrics.pending_timers.set(pending)
    metrics.overdue_timers.set(overdue)


async def build_snapshot(core: RelayCore, tracker: LatencyTracker) -> Json:
    """The operator snapshot (``GET /ops/snapshot``, the SSE events, ``relay status``)."""
    now = core.clock()
    store = core.store
    health = core.health(now)
    connected: Mapping[str, int] = health["connected"]
    last_seen: Mapping[str, int] = health["last_seen"]
    stats = {s.recipient: s for s in await store.queue_stats()}
    pending, overdue, next_due = await store.timer_stats(now, overdue_after_ms=OVERDUE_AFTER_MS)
    await tracker.refresh(store, health["recent"], now)
    escalations: list[Json] = []
    open_by: dict[str, int] = {}
    for record in await store.open_escalations(limit=ESCALATION_LIMIT):
        receipts = await store.receipts(record.id)
        escalations.append(message_summary(record, receipts, core.identity.id))
        for aid in set(record.to):
            open_by[aid] = open_by.get(aid, 0) + 1
    directory = core.directory
    authorities: list[Json] = []
    for entry in directory.authorities:
        if entry.role == "relay":
            continue
        aid = entry.id
        queue = stats.get(aid)
        oldest = queue.oldest_enqueued_at if queue is not None else None
        p50, p95, samples = tracker.stats(aid)
        probe_at, rtt, reachable = _probe(core, aid, now)
        authorities.append(
            {
                "id": aid,
                "name": entry.name,
                "country": entry.country,
                "role": entry.role,
                "connected": connected.get(aid, 0) > 0,
                "connections": connected.get(aid, 0),
                "last_seen": last_seen.get(aid),
                "probe_answered_at": probe_at,
                "probe_rtt_ms": rtt,
                "reachable": reachable,
                "queue_depth": queue.depth if queue is not None else 0,
                "oldest_unacked_age_s": max(0, now - oldest) / 1000 if oldest else None,
                "open_escalations": open_by.get(aid, 0),
                "latency_p50_s": p50,
                "latency_p95_s": p95,
                "latency_samples": samples,
            }
        )
    problems = []
    if overdue:
        problems.append(
            f"{overdue} escalation timer{'s are' if overdue != 1 else ' is'} overdue "
            f"by more than {OVERDUE_AFTER_MS} ms"
        )
    return {
        "relay": core.identity.id,
        "network": directory.network,
        "directory_version": directory.version,
        "now": now,
        "healthy": not problems,
        "problems": problems,
        "timers": {"pending": pending, "overdue": overdue, "next_due": next_due},
        "queued": sum(s.depth for s in stats.values()),
        "connected_daemons": sum(connected.values()),
        "authorities": authorities,
        "escalations": escalations,
    }


# -- formatting (the same words on the page, in the terminal) ---------------------------


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86_400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86_400}d {s % 86_400 // 3600}h"


def fmt_latency(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return fmt_age(seconds)


def fmt_event(event: Mapping[str, Any]) -> str:
    status = str(event.get("status"))
    if event.get("step"):
        status += f" ({event['step']})"
    return f"{status} by {event.get('by')} at {fmt_time(event.get('at'))}"


def fmt_presence(a: Mapping[str, Any]) -> str:
    if a.get("connected"):
        n = a.get("connections", 1)
        return "connected" + (f" x{n}" if isinstance(n, int) and n > 1 else "")
    return "offline"


# -- `relay status` ---------------------------------------------------------------------


class StatusError(Exception):
    """The snapshot could not be fetched: one line for stderr."""


async def fetch_snapshot(url: str, token: str, *, timeout_s: float = 10.0) -> Json:
    import aiohttp

    target = url.rstrip("/") + "/ops/snapshot"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(target, headers=headers) as resp,
        ):
            body = await resp.read()
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise StatusError(f"cannot reach the relay at {url}: {exc or type(exc).__name__}") from exc
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise StatusError(f"{target} answered {status} with a body that is not JSON") from exc
    if status != 200 or not isinstance(data, dict):
        detail = data.get("detail") if isinstance(data, dict) else None
        raise StatusError(f"{target} answered {status}: {detail or 'unexpected answer'}")
    return data


def render_tables(snap: Mapping[str, Any], console: Console) -> None:
    from rich.table import Table

    now = snap.get("now")
    auth = Table(
        title=f"Authorities — relay {snap.get('relay')}, directory v{snap.get('directory_version')}"
    )
    for col in ("authority", "daemon", "last seen", "last probe", "queue", "oldest unacked"):
        auth.add_column(col, no_wrap=True, justify="right" if col == "queue" else "left")
    auth.add_column("open esc.", justify="right")
    auth.add_column("p50", justify="right")
    auth.add_column("p95", justify="right")
    for a in snap.get("authorities", []):
        seen = "now" if a.get("connected") else fmt_time(a.get("last_seen"))
        auth.add_row(
            str(a.get("id")),
            fmt_presence(a),
            seen,
            fmt_time(a.get("probe_answered_at")),
            str(a.get("queue_depth", 0)),
            fmt_age(a.get("oldest_unacked_age_s")),
            str(a.get("open_escalations", 0)),
            fmt_latency(a.get("latency_p50_s")),
            fmt_latency(a.get("latency_p95_s")),
        )
    console.print(auth)

    esc = Table(title="Open escalations")
    for col in ("message", "from", "to", "priority", "step", "state", "accepted", "latest"):
        esc.add_column(col, overflow="fold")
    for e in snap.get("escalations", []):
        latest = e["timeline"][-1] if e.get("timeline") else {}
        esc.add_row(
            str(e.get("id")),
            str(e.get("sender")),
            ", ".join(e.get("to", [])),
            str(e.get("priority")),
            str(e.get("escalation_step") or "—"),
            str(e.get("state")),
            fmt_time(e.get("accepted_at")),
            fmt_event(latest) if latest else "—",
        )
    if not snap.get("escalations"):
        esc.add_row("none", "", "", "", "", "", "", "")
    console.print(esc)

    timers = snap.get("timers", {})
    tt = Table(title="Escalation timers")
    tt.add_column("pending", justify="right")
    tt.add_column("overdue", justify="right")
    tt.add_column("next due")
    overdue = int(timers.get("overdue", 0))
    tt.add_row(
        str(timers.get("pending", 0)),
        f"[bold red]{overdue}[/]" if overdue else "0",
        fmt_time(timers.get("next_due")),
    )
    console.print(tt)
    if isinstance(now, int):
        console.print(f"as of {fmt_time(now)} (relay clock)")


def run_status(url: str, token: str, *, as_json: bool) -> list[str]:
    """Fetch and print the snapshot; returns the problems (empty when healthy).

    Raises :class:`StatusError` when the relay cannot be asked.
    """
    from rich.console import Console

    snap = asyncio.run(fetch_snapshot(url, token))
    if as_json:
        sys.stdout.write(json.dumps(snap, indent=2, sort_keys=True) + "\n")
    else:
        console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
        render_tables(snap, console)
    problems = snap.get("problems")
    return [str(p) for p in problems] if isinstance(problems, list) else []
