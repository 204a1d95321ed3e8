"""The daemon's Prometheus metrics, opt-in (``metrics_port``), on loopback by default.

Values are read when scraped: the daemon's counters (:class:`Stats`),
whether it is connected, what waits in the local inbox (one read), the directory's
expiry and what retention forgot. Names follow the relay's (``cpar_daemon_*``); no
label takes a value from message traffic, and nothing carries content.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clients.directory import PinnedDirectory
from clients.retention import RetentionWorker
from clients.store import Inbox
from keys.loghead import SignedHead

__all__ = ["DaemonView", "Stats", "serve_metrics"]

log = logging.getLogger(__name__)


@dataclass
class Stats:
    """The daemon's counters since it started."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    receipts: int = 0
    escalations: int = 0
    connects: int = 0
    batches: int = 0


class DaemonView(Protocol):
    """What the metrics read of a running daemon (:class:`clients.daemon.Daemon`)."""

    stats: Stats
    connected: asyncio.Event
    pin: PinnedDirectory | None
    inbox: Inbox | None
    retention: RetentionWorker | None
    log_head: SignedHead | None
    log_fork: str | None


class _Scrape(Collector):
    """The families of one scrape, computed beforehand (collect() cannot await)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


async def families(daemon: DaemonView) -> list[Metric]:
    s = daemon.stats
    out: list[Metric] = [
        _gauge(
            "cpar_daemon_connected", "1 while connected to the relay", daemon.connected.is_set()
        ),
        _counter("cpar_daemon_connects", "Connections made to the relay", s.connects),
        _counter(
            "cpar_daemon_messages_stored", "Messages verified, decrypted and stored", s.stored
        ),
        _counter(
            "cpar_daemon_duplicates", "Messages delivered again and already stored", s.duplicates
        ),
        _counter(
            "cpar_daemon_refused", "Items refused (bad signature, unknown sender, ...)", s.rejected
        ),
        _counter(
            "cpar_daemon_receipts", "Receipts about sent messages verified and recorded", s.receipts
        ),
        _counter(
            "cpar_daemon_escalation_notices",
            "Reminders, releases and notices received",
            s.escalations,
        ),
    ]
    pin = daemon.pin
    current = pin.current if pin is not None else None
    expires = current.expires if current is not None and current.expires is not None else 0
    out.append(
        _gauge(
            "cpar_daemon_directory_expires_timestamp_seconds",
            "When the pinned directory version expires (Unix time); 0 when unknown",
            expires / 1000,
        )
    )
    out += [
        _gauge(
            "cpar_daemon_log_size",
            "Size of the relay's log at the newest head verified to extend the older ones",
            daemon.log_head.size if daemon.log_head is not None else 0,
        ),
        _gauge(
            "cpar_daemon_log_inconsistent",
            "1 while the relay shows a log that does not extend the head held here",
            daemon.log_fork is not None,
        ),
    ]
    if daemon.inbox is not None:
        g = await daemon.inbox.gauges()
        out += [
            _gauge(
                "cpar_daemon_unhandled_messages",
                "Received messages not yet acknowledged or rejected",
                g.unhandled,
            ),
            _gauge(
                "cpar_daemon_outbox_queued",
                "Envelopes waiting in the outbox for the relay",
                g.outbox_queued,
            ),
            _gauge(
                "cpar_daemon_decisions_pending",
                "Decision receipts not yet confirmed by the relay",
                g.decisions_pending,
            ),
            _gauge(
                "cpar_daemon_hook_jobs_pending", "Hook jobs waiting to run", g.hook_jobs_pending
            ),
            _gauge("cpar_daemon_hook_jobs_failed", "Hook jobs that gave up", g.hook_jobs_failed),
        ]
    if daemon.retention is not None:
        r = daemon.retention.stats
        forgotten = CounterMetricFamily(
            "cpar_daemon_retention_forgotten",
            "Records forgotten by retention: received, sent, receipts, events, audit entries;"
            " archived files",
            labels=["what"],
        )
        for what in ("received", "sent", "receipts", "events", "audit", "archived"):
            forgotten.add_metric([what], getattr(r, what))
        out += [
            forgotten,
            _gauge(
                "cpar_daemon_retention_last_run_timestamp_seconds",
                "When retention last finished a run (Unix time); 0 before the first",
                (r.last_run_at or 0) / 1000,
            ),
        ]
    return out


async def serve_metrics(daemon: DaemonView, host: str, port: int) -> web.AppRunner:
    """Start ``GET /metrics`` on ``host:port``; the caller cleans the runner up."""

    async def handle(request: web.Request) -> web.Response:
        body = generate_latest(_Scrape(await families(daemon)))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("daemon metrics on http://%s:%d/metrics", host, port)
    return runner
