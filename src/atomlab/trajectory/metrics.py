"""Prometheus metrics of a recording, fed with every record the monitor produces::

metrics = MonitorMetrics()
Monitor(source, config, store, on_record=metrics).run(duration_s=60)
metrics.metrics.write_textfile(home / "trajectory.prom")    # node-exporter textfile
"""

from __future__ import annotations

from atomlab.core.metrics import Metrics
from atomlab.trajectory.records import ActionEvent, MissedTicks, MonitorError, Record, Sample

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)
LATENESS_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05)


class MonitorMetrics:
    """``atomlab_trajectory_*`` counters and histograms; call it with each record."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics("trajectory")
        m = self.metrics
        self.samples = m.counter("samples_total", "Samples recorded.")
        self.actions = m.counter("actions_total", "Actions inferred.", labels=("source",))
        self.errors = m.counter(
            "poll_errors_total", "Failed polls and reconnect attempts.", labels=("error_type",)
        )
        self.missed = m.counter("missed_ticks_total", "Ticks not polled.", labels=("reason",))
        self.latency = m.histogram(
            "poll_latency_seconds", "Time to read every signal and spec once.",
            buckets=LATENCY_BUCKETS_S,
        )  # fmt: skip
        self.lateness = m.histogram(
            "tick_lateness_seconds", "Poll start minus its schedule.", buckets=LATENESS_BUCKETS_S
        )

    def __call__(self, record: Record) -> None:
        if isinstance(record, Sample):
            self.samples.inc()
            self.latency.observe(record.latency_s)
            self.lateness.observe(max(record.dt_s - record.scheduled_dt_s, 0.0))
        elif isinstance(record, ActionEvent):
            self.actions.labels(source=record.source).inc()
        elif isinstance(record, MonitorError):
            self.errors.labels(error_type=record.error_type).inc()
        elif isinstance(record, MissedTicks):
            self.missed.labels(reason=record.reason).inc(record.count)
