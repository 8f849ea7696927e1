"""The swarm service's Prometheus metrics (``atomlab_swarm_*``), one registry per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from atomlab.core.metrics import Metrics

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REPAIR_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


class SwarmMetrics:
    """Counters, gauges and histograms of one swarm service instance."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        m = Metrics("swarm", registry)
        self.metrics = m
        self.registry = m.registry
        self.defects = m.counter(
            "defects_total",
            "Defects by outcome: detected, duplicate, repaired, failed, unrepairable, retried.",
            labels=("outcome",),
        )
        self.commands = m.counter(
            "commands_total", "Command status changes, by action and status.", ("action", "status")
        )
        self.queue_depth = m.gauge("queue_depth", "Defects waiting for an agent.")
        self.pending_operations = m.gauge(
            "pending_operations", "Defects not yet completed, failed or unrepairable."
        )
        self.agents = m.gauge("agents", "Agents by status.", labels=("status",))
        self.reassignments = m.counter(
            "reassignments_total", "Defects taken from a failed agent and queued again."
        )
        self.agent_failures = m.counter(
            "agent_failures_total", "Agents declared failed, by reason.", labels=("reason",)
        )
        self.plans = m.counter("plans_total", "Repair routes planned, by source.", ("source",))
        self.planning_seconds = m.histogram(
            "planning_seconds", "Time to plan one batch.", buckets=LATENCY_BUCKETS
        )
        self.ingest_seconds = m.histogram(
            "ingest_seconds",
            "Time to validate and enqueue one sensor-data batch.",
            buckets=LATENCY_BUCKETS,
        )
        self.dispatch_seconds = m.histogram(
            "reassignment_seconds",
            "From an agent failure being detected to its work being dispatched again.",
            buckets=LATENCY_BUCKETS,
        )
        self.repair_seconds = m.histogram(
            "repair_seconds", "From detection to verified repair.", buckets=REPAIR_BUCKETS
        )
        self.separation_alerts = m.counter(
            "separation_alerts_total", "Two agents reported closer than the separation radius."
        )
        self.halts = m.counter("halts_total", "Swarm-wide halts (E-stop) issued.")
        self.db_writes = m.counter("db_writes_total", "Rows written by the background writer.")
        self.db_errors = m.counter("db_errors_total", "Failed background write batches.")
        self.db_rejected_rows = m.counter(
            "db_rejected_rows_total",
            "Rows the database refused on their own (logged and dropped; the rest was written).",
        )
        self.db_commit_seconds = m.histogram(
            "db_commit_seconds", "Time to commit one write batch.", buckets=LATENCY_BUCKETS
        )
        self.task_failures = m.counter(
            "task_failures_total", "Failures of background tasks, by task.", labels=("task",)
        )
        self.task_restarts = m.counter(
            "task_restarts_total", "Background tasks started again after a crash.", ("task",)
        )
        self.task_up = m.gauge("task_up", "1 while a background task runs.", labels=("task",))
        self.auth_failures = m.counter(
            "auth_failures_total",
            "Requests and link peers refused for a missing or wrong credential, by scope.",
            labels=("scope",),
        )
        self.rejected_results = m.counter(
            "rejected_results_total",
            "Command results refused: from another agent than the command's, or another action.",
        )
        self.rejected_requests = m.counter(
            "rejected_requests_total",
            "Requests refused before routing (body too large, not JSON, too deep), by reason.",
            labels=("reason",),
        )
        self.http_requests = m.counter(
            "http_requests_total", "HTTP requests by route and status code.", ("route", "code")
        )
