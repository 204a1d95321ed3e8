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
import os
import sys
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keys.errors import KeysError
from keys.jws import unverified_payload
from keys.lifecycle import STEP_NAMES, Schedule, Step
from keys.models import DirectoryEntry
from relay.core.errors import UnavailableError
from relay.core.escalation import OVERDUE_AFTER_MS
from relay.core.readmodel import (
    DIRECTORY_WARN_MS,
    ProbeState,
    Reachability,
    ReadModel,
    RecentMessage,
    TimerStats,
)
from relay.store.base import MessageRecord, ReceiptRecord

if TYPE_CHECKING:
    from rich.console import Console

    from relay.core.metrics import Metrics

ESCALATION_LIMIT = 100
"""At most this many open escalations (newest first) are listed with their timelines."""
TRACK_MAX = 256
"""Delivery latency: at most this many recent messages are followed at a time."""
TRACK_HORIZON_MS = 15 * 60_000
"""A message not answered by every recipient within this long is no longer followed."""
SAMPLES_PER_AUTHORITY = 200
RECIPIENT_STATUSES = frozenset({"delivered", "acknowledged", "rejected"})

Json = dict[str, Any]


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

    Fed with the latest accepted messages (:meth:`ReadModel.recent`). Each one is
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

    async def refresh(self, read: ReadModel, recent: Sequence[RecentMessage], now: int) -> None:
        async with self._lock:
            for m in reversed(recent):  # oldest first
                if m.id in self._finished or m.id in self._following:
                    continue
                self._following[m.id] = (set(m.recipients), m.accepted_at)
                while len(self._following) > TRACK_MAX:
                    self._finish(self._following.popitem(last=False)[0])
            for msg_id, (waiting, accepted_at) in list(self._following.items()):
                if now - accepted_at > TRACK_HORIZON_MS:
                    self._finish(msg_id)
                    continue
                done = False
                for receipt in await read.receipts(msg_id):
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


async def message_timeline(read: ReadModel, msg_id: str) -> Json | None:
    record = await read.message(msg_id)
    if record is None:
        return None
    receipts = await read.receipts(msg_id)
    return message_summary(record, receipts, read.relay_id)


PRIORITY_RANK = {"urgent": 0, "high": 1, "routine": 2}


@dataclass(frozen=True, slots=True)
class AuthorityHealth:
    entry: DirectoryEntry
    connections: int
    last_seen: int | None
    reach: Reachability
    probe: ProbeState
    queue_depth: int
    oldest_enqueued_at: int | None
    open_escalations: int


@dataclass(frozen=True, slots=True)
class OpenEscalation:
    record: MessageRecord
    expected_by: int
    """When an acknowledgement was expected: the sender's ack_by, else the first step."""
    next_step: tuple[int, int] | None
    """The next escalation step and when it is due, if any."""


@dataclass(frozen=True, slots=True)
class Health:
    now: int
    authorities: list[AuthorityHealth]
    escalations: list[OpenEscalation]
    """Most urgent first: priority, then how long overdue."""
    timers: TimerStats
    queued: int
    connections: int
    problems: list[str]
    """Why an operator must look (empty: healthy)."""


def _open_escalation(record: MessageRecord) -> OpenEscalation:
    snap = Schedule.loads(record.policy)
    first = snap.due(Step.REMIND) if snap is not None else None
    expected = record.ack_by if record.ack_by is not None else (first or record.accepted_at)
    nxt = snap.next_after(record.escalation_step) if snap is not None else None
    return OpenEscalation(record, expected, nxt)


async def collect_health(read: ReadModel) -> Health:
    """Everything the operator views need, and the problems that make health degraded:
    an authority unreachable for longer than the configured threshold, a message at the
    notify step, an overdue escalation timer."""
    now = read.clock()
    presence = read.presence(now)
    stats = {s.recipient: s for s in await read.queue_stats()}
    timers = await read.timer_stats(now, overdue_after_ms=OVERDUE_AFTER_MS)
    escalations = [_open_escalation(r) for r in await read.open_escalations(limit=ESCALATION_LIMIT)]
    escalations.sort(
        key=lambda e: (PRIORITY_RANK.get(e.record.priority, 9), e.expected_by, e.record.id)
    )
    open_by: dict[str, int] = {}
    for e in escalations:
        for aid in set(e.record.to):
            open_by[aid] = open_by.get(aid, 0) + 1
    authorities: list[AuthorityHealth] = []
    for entry in read.directory.authorities:
        if entry.role == "relay":
            continue
        queue = stats.get(entry.id)
        authorities.append(
            AuthorityHealth(
                entry=entry,
                connections=presence.connected.get(entry.id, 0),
                last_seen=presence.last_seen.get(entry.id),
                reach=read.reachability(entry.id, now),
                probe=read.probe(entry.id, now),
                queue_depth=queue.depth if queue is not None else 0,
                oldest_enqueued_at=queue.oldest_enqueued_at if queue is not None else None,
                open_escalations=open_by.get(entry.id, 0),
            )
        )
    problems: list[str] = []
    for a in authorities:
        since = a.reach.since
        if since is not None and now - since > read.unreachable_after_ms:
            problems.append(
                f"{a.entry.id} unreachable for {fmt_age((now - since) / 1000)} "
                f"(since {fmt_time(since)})"
            )
    for e in escalations:
        if e.record.escalation_step >= Step.NOTIFY:
            problems.append(
                f"message {e.record.id} from {e.record.sender} to {', '.join(e.record.to)} "
                "reached the notify step"
            )
    if timers.overdue:
        problems.append(
            f"{timers.overdue} escalation timer{'s are' if timers.overdue != 1 else ' is'} "
            f"overdue by more than {OVERDUE_AFTER_MS} ms"
        )
    directory = read.directory
    if directory.expires is not None and directory.expires - now < DIRECTORY_WARN_MS:
        problems.append(
            f"directory version {directory.version} "
            f"{'expired' if directory.expires <= now else 'expires'} on "
            f"{fmt_time(directory.expires)}: daemons refuse it after their grace; publish a "
            "newer version"
        )
    return Health(
        now=now,
        authorities=authorities,
        escalations=escalations,
        timers=timers,
        queued=sum(s.depth for s in stats.values()),
        connections=sum(presence.connected.values()),
        problems=problems,
    )


async def refresh_gauges(read: ReadModel, metrics: Metrics) -> None:
    """Set the gauges (called on each /metrics scrape). A store that does not answer
    sets ``cpar_store_up`` to 0; the scrape itself still succeeds."""
    metrics.connected.set(read.connections())
    try:
        health = await collect_health(read)
    except UnavailableError:
        metrics.store_up.set(0)
        metrics.degraded.set(1)
        return
    now = health.now
    metrics.store_up.set(1)
    metrics.degraded.set(1 if health.problems else 0)
    metrics.pending.set(health.queued)
    oldest = min(
        (a.oldest_enqueued_at for a in health.authorities if a.oldest_enqueued_at), default=None
    )
    metrics.oldest_unacked.set(max(0, now - oldest) / 1000 if oldest is not None else 0)
    metrics.pending_timers.set(health.timers.pending)
    metrics.overdue_timers.set(health.timers.overdue)
    metrics.at_notify_step.set(
        sum(1 for e in health.escalations if e.record.escalation_step >= Step.NOTIFY)
    )
    for gauge in metrics.per_authority:
        gauge.clear()  # authorities that left the directory leave the metrics too
    for a in health.authorities:
        aid = a.entry.id
        since = a.reach.since
        metrics.authority_connected.labels(authority=aid).set(a.connections)
        metrics.authority_reachable.labels(authority=aid).set(1 if a.reach.reachable else 0)
        metrics.authority_unreachable.labels(authority=aid).set(
            max(0, now - since) / 1000 if since is not None else 0
        )
        metrics.authority_queue_depth.labels(authority=aid).set(a.queue_depth)
        metrics.authority_oldest_unacked.labels(authority=aid).set(
            max(0, now - a.oldest_enqueued_at) / 1000 if a.oldest_enqueued_at else 0
        )
        metrics.authority_open_escalations.labels(authority=aid).set(a.open_escalations)


async def build_snapshot(read: ReadModel, tracker: LatencyTracker) -> Json:
    """The operator snapshot (``GET /ops/snapshot``, the SSE events, ``relay status``)."""
    health = await collect_health(read)
    now = health.now
    await tracker.refresh(read, read.recent(), now)
    escalations: list[Json] = []
    for e in health.escalations:
        receipts = await read.receipts(e.record.id)
        summary = message_summary(e.record, receipts, read.relay_id)
        summary["expected_by"] = e.expected_by
        summary["overdue_by_s"] = max(0, now - e.expected_by) / 1000
        summary["next_step"] = STEP_NAMES.get(e.next_step[0]) if e.next_step else None
        summary["next_due"] = e.next_step[1] if e.next_step else None
        escalations.append(summary)
    directory = read.directory
    authorities: list[Json] = []
    for a in health.authorities:
        p50, p95, samples = tracker.stats(a.entry.id)
        oldest = a.oldest_enqueued_at
        authorities.append(
            {
                "id": a.entry.id,
                "name": a.entry.name,
                "country": a.entry.country,
                "role": a.entry.role,
                "connected": a.connections > 0,
                "connections": a.connections,
                "last_seen": a.last_seen,
                "probe_answered_at": a.probe.answered_at,
                "probe_rtt_ms": a.probe.rtt_ms,
                "reachable": a.reach.reachable,
                "unreachable_since": a.reach.since,
                "queue_depth": a.queue_depth,
                "oldest_unacked_age_s": max(0, now - oldest) / 1000 if oldest else None,
                "open_escalations": a.open_escalations,
                "latency_p50_s": p50,
                "latency_p95_s": p95,
                "latency_samples": samples,
            }
        )
    timers = health.timers
    return {
        "relay": read.relay_id,
        "network": directory.network,
        "directory_version": directory.version,
        "now": now,
        "status": "degraded" if health.problems else "healthy",
        "healthy": not health.problems,
        "problems": health.problems,
        "timers": {
            "pending": timers.pending,
            "overdue": timers.overdue,
            "next_due": timers.next_due,
        },
        "queued": health.queued,
        "connected_daemons": health.connections,
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
        text = "connected" + (f" x{n}" if isinstance(n, int) and n > 1 else "")
    else:
        text = "offline"
    since = a.get("unreachable_since")
    if a.get("reachable") is False and isinstance(since, int):
        text += f", unreachable since {fmt_time(since)}"
    return text


def fmt_next(e: Mapping[str, Any]) -> str:
    """An open escalation's next step and when it is due."""
    step = e.get("next_step")
    return f"{step} at {fmt_time(e.get('next_due'))}" if step else "—"


# -- `relay status` ---------------------------------------------------------------------


class StatusError(Exception):
    """The snapshot could not be fetched: one line for stderr."""


async def fetch_snapshot(
    url: str, token: str, *, timeout_s: float = 10.0, tls_cert: str | None = None
) -> Json:
    import ssl

    import aiohttp

    verify: ssl.SSLContext | bool = True
    if tls_cert is not None:  # trust the relay's own (self-signed) certificate
        try:
            verify = ssl.create_default_context(cafile=tls_cert)
        except (OSError, ssl.SSLError) as exc:
            raise StatusError(f"cannot use {tls_cert} as the relay's certificate: {exc}") from exc

    target = url.rstrip("/") + "/ops/snapshot"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(target, headers=headers, ssl=verify) as resp,
        ):
            body = await resp.read()
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise StatusError(f"cannot reach the relay at {url}: {_why(exc)}") from exc
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise StatusError(f"{target} answered {status} with a body that is not JSON") from exc
    if status != 200 or not isinstance(data, dict):
        detail = data.get("detail") if isinstance(data, dict) else None
        raise StatusError(f"{target} answered {status}: {detail or 'unexpected answer'}")
    return data


def _why(exc: BaseException) -> str:
    """The operating system's reason, not aiohttp's text (which says ``ssl:default``)."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        return os.strerror(err.errno) if err.errno else (err.strerror or type(err).__name__)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


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

    esc = Table(title="Open escalations (most urgent first)")
    esc.add_column("message", no_wrap=True)
    for col in ("from", "to", "priority", "step", "ack by", "overdue by", "next"):
        esc.add_column(col, overflow="fold")
    esc.add_column("latest", overflow="fold")
    for e in snap.get("escalations", []):
        latest = e["timeline"][-1] if e.get("timeline") else {}
        esc.add_row(
            str(e.get("id")),
            str(e.get("sender")),
            ", ".join(e.get("to", [])),
            str(e.get("priority")),
            str(e.get("escalation_step") or "—"),
            fmt_time(e.get("ack_by") or e.get("expected_by")),
            fmt_age(e.get("overdue_by_s")),
            fmt_next(e),
            fmt_event(latest) if latest else "—",
        )
    if not snap.get("escalations"):
        esc.add_row("none", "", "", "", "", "", "", "", "")
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
    problems = snap.get("problems") or []
    if problems:
        console.print("[bold red]degraded[/]: " + "; ".join(str(p) for p in problems))
    else:
        console.print("[bold green]healthy[/]")
    if isinstance(now, int):
        console.print(f"as of {fmt_time(now)} (relay clock)")


def run_status(url: str, token: str, *, as_json: bool, tls_cert: str | None = None) -> list[str]:
    """Fetch and print the snapshot; returns the problems (empty when healthy).

    Raises :class:`StatusError` when the relay cannot be asked.
    """
    from rich.console import Console

    snap = asyncio.run(fetch_snapshot(url, token, tls_cert=tls_cert))
    if as_json:
        sys.stdout.write(json.dumps(snap, indent=2, sort_keys=True) + "\n")
    else:
        console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
        render_tables(snap, console)
    problems = snap.get("problems")
    return [str(p) for p in problems] if isinstance(problems, list) else []
