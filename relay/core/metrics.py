"""Prometheus metrics for one relay (its own registry: no global state).

Names follow the Prometheus conventions: base units (seconds), ``_total`` on counters,
and no label whose values grow with traffic: no per-message labels, and the only
per-authority label (``authority``, on the ``cpar_authority_*`` gauges) takes its values
from the signed directory, so the label set is bounded by the network's size. The
shipped alert rules (``relay/prometheus/alerts.yml``) use these names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
ACK_BUCKETS = (1, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600, 86400, 259200)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter(
            "cpar_messages_accepted", "Messages accepted and made durable", registry=r
        )
        self.receipts = Counter(
            "cpar_receipts", "Recipient receipts stored, by status", ["status"], registry=r
        )
        self.escalations = Counter(
            "cpar_escalations", "Escalation steps fired, by step", ["step"], registry=r
        )
        self.redeliveries = Counter(
            "cpar_redeliveries", "Items pushed again after a reconnect or reminder", registry=r
        )
        self.dead_lettered = Counter(
            "cpar_dead_lettered",
            "Messages that expired before any recipient acknowledged",
            registry=r,
        )
        self.delivery_latency = Histogram(
            "cpar_delivery_latency_seconds",
            "From accepted to the first delivered receipt",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ack_latency = Histogram(
            "cpar_acknowledgement_latency_seconds",
            "From accepted to acknowledged",
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "cpar_pending_messages",
            "Items queued for authorities, not yet acknowledged",
            registry=r,
        )
        self.oldest_unacked = Gauge(
            "cpar_oldest_unacknowledged_age_seconds", "Age of the oldest queued item", registry=r
        )
        self.overdue_timers = Gauge(
            "cpar_overdue_timers",
            "Escalation timers past their deadline by more than 1 s",
            registry=r,
        )
        self.pending_timers = Gauge(
            "cpar_pending_timers", "Escalation and expiry timers waiting", registry=r
        )
        self.connected = Gauge("cpar_connected_daemons", "Daemon connections open now", registry=r)
        self.store_up = Gauge(
            "cpar_store_up", "1 when the message store answered the last scrape, else 0", registry=r
        )
        self.at_notify_step = Gauge(
            "cpar_messages_at_notify_step",
            "Open messages whose escalation reached the notify step (operators notified)",
            registry=r,
        )
        self.degraded = Gauge(
            "cpar_degraded", "1 when the relay's health is degraded (see /ops), else 0", registry=r
        )
        self.directory_expires = Gauge(
            "cpar_directory_expires_timestamp_seconds",
            "When the directory version in force expires (Unix time); 0 when it has no expiry",
            registry=r,
        )
        self.pruned = Counter(
            "cpar_retention_pruned",
            "Records forgotten by retention: messages, receipts, queued (unread envelope "
            "copies), attachments",
            ["what"],
            registry=r,
        )
        self.retention_run = Gauge(
            "cpar_retention_last_run_timestamp_seconds",
            "When retention last finished a run (Unix time); 0 before the first",
            registry=r,
        )
        labels = ["authority"]
        self.authority_connected = Gauge(
            "cpar_authority_connected", "Open daemon connections per authority", labels, registry=r
        )
        self.authority_reachable = Gauge(
            "cpar_authority_reachable",
            "1 when the authority's daemon answered end-to-end probes lately, else 0",
            labels,
            registry=r,
        )
        self.authority_unreachable = Gauge(
            "cpar_authority_unreachable_seconds",
            "How long the authority has been unreachable (0 when reachable)",
            labels,
            registry=r,
        )
        self.authority_queue_depth = Gauge(
            "cpar_authority_queue_depth", "Items queued for the authority", labels, registry=r
        )
        self.authority_oldest_unacked = Gauge(
            "cpar_authority_oldest_unacknowledged_age_seconds",
            "Age of the oldest item queued for the authority (0 when none)",
            labels,
            registry=r,
        )
        self.authority_open_escalations = Gauge(
            "cpar_authority_open_escalations",
            "Open escalations of messages addressed to the authority",
            labels,
            registry=r,
        )
        self.per_authority = (
            self.authority_connected,
            self.authority_reachable,
            self.authority_unreachable,
            self.authority_queue_depth,
            self.authority_oldest_unacked,
            self.authority_open_escalations,
        )
        for step in ("remind", "release", "notify", "expire"):
            self.escalations.labels(step=step)
        for status in ("delivered", "acknowledged", "rejected"):
            self.receipts.labels(status=status)
        for what in ("messages", "receipts", "queued", "attachments"):
            self.pruned.labels(what=what)
