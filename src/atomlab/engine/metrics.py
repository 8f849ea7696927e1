"""The engine's Prometheus metrics (``atomlab_engine_*``), one set per registry.

``queue_inflight`` counts provider calls in flight right now (not free slots, as the origin did).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from atomlab.core.metrics import Metrics

STAGE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


@dataclass(frozen=True)
class StageMetrics:
    submitted: Counter
    ok: Counter
    error: Counter
    duration: Histogram
    retries: Counter


class EngineMetrics:
    """Counters, gauges and histograms a run updates; ``write_textfile`` at the end of a run."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        metrics = Metrics("engine", registry)
        self.metrics = metrics
        self.inflight = metrics.gauge("queue_inflight", "Provider calls in flight now.")
        self.submitted = metrics.counter(
            "queue_submitted_total", "Provider calls submitted, per stage.", labels=("stage",)
        )
        self.completed = metrics.counter(
            "queue_completed_total",
            "Provider calls finished, per stage and outcome (ok or error).",
            labels=("stage", "outcome"),
        )
        self.stage_duration = metrics.histogram(
            "stage_duration_seconds",
            "Seconds one provider call of a stage took (queue wait included).",
            labels=("stage",),
            buckets=STAGE_BUCKETS_S,
        )
        self.cache_hits = metrics.counter("cache_hits_total", "Answers served from the cache.")
        self.cache_misses = metrics.counter("cache_misses_total", "Cache lookups that missed.")
        self.cache_corrupt = metrics.counter(
            "cache_corrupt_total", "Cache entries found corrupt (treated as misses)."
        )
        self.cache_store_errors = metrics.counter(
            "cache_store_errors_total",
            "Answers that could not be stored in the cache (the run went on without).",
        )
        self.retries = metrics.counter(
            "retries_total", "Transport retries the LLM queue made, per stage.", labels=("stage",)
        )
        self.items = metrics.counter(
            "items_total", "Items finished, per outcome (ok or rejected).", labels=("outcome",)
        )
        self.tokens = metrics.counter(
            "tokens_total", "Tokens used by provider calls, per kind.", labels=("kind",)
        )
        self.breaker_state = metrics.gauge(
            "breaker_state", "LLM circuit breaker: 0 closed, 1 open, 2 half-open."
        )

        self.prompt_tokens = self.tokens.labels(kind="prompt")
        self.output_tokens = self.tokens.labels(kind="output")
        self._stages: dict[str, StageMetrics] = {}

    def for_stage(self, stage: str) -> StageMetrics:
        """The label children of one stage, resolved once (label lookups cost per call)."""
        found = self._stages.get(stage)
        if found is None:
            found = StageMetrics(
                submitted=self.submitted.labels(stage=stage),
                ok=self.completed.labels(stage=stage, outcome="ok"),
                error=self.completed.labels(stage=stage, outcome="error"),
                duration=self.stage_duration.labels(stage=stage),
                retries=self.retries.labels(stage=stage),
            )
            self._stages[stage] = found
        return found

    def cache_event(self, event: str) -> None:
        {
            "hit": self.cache_hits,
            "miss": self.cache_misses,
            "corrupt": self.cache_corrupt,
            "store_error": self.cache_store_errors,
        }[event].inc()

    def write_textfile(self, path: str) -> None:
        self.metrics.write_textfile(path)


__all__ = ["STAGE_BUCKETS_S", "EngineMetrics"]
