"""Prometheus metrics: a registry per app or engine instance, named ``atomlab_<capability>_<name>``.

metrics = Metrics("engine")
done = metrics.counter("items_total", "Items processed.", labels=("status",))
done.labels(status="ok").inc()
metrics.write_textfile(home / "engine.prom")     # for batch jobs (node-exporter textfile)
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import write_to_textfile as _write_to_textfile
from prometheus_client.metrics import MetricWrapperBase

_NAME_PART = re.compile(r"^[a-z][a-z0-9_]*$")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_M = TypeVar("_M", bound=MetricWrapperBase)

_cache_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, MetricWrapperBase]] = (
    weakref.WeakKeyDictionary()
)


def new_registry() -> CollectorRegistry:
    """A fresh registry; never the process-global default, so instances and tests never collide."""
    return CollectorRegistry(auto_describe=True)


def metric_name(capability: str, name: str) -> str:
    """``atomlab_<capability>_<name>``; both parts lowercase snake case."""
    for part, value in (("capability", capability), ("name", name)):
        if not _NAME_PART.match(value):
            raise ValueError(
                f"metric {part} {value!r} must be lowercase snake case (letters, digits, _)"
            )
    return f"atomlab_{capability}_{name}"


class Metrics:
    """Creates (or returns the existing) metrics of one capability in one registry."""

    def __init__(self, capability: str, registry: CollectorRegistry | None = None) -> None:
        metric_name(capability, "x")  # validates the capability name
        self.capability = capability
        self.registry = registry if registry is not None else new_registry()

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return self._get(Counter, name, documentation, labels)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return self._get(Gauge, name, documentation, labels)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        full = metric_name(self.capability, name)
        with _cache_lock:
            known = _cache.setdefault(self.registry, {})
            if full in known:
                return _checked(known[full], Histogram, full)
            metric = Histogram(
                full,
                documentation,
                labelnames=tuple(labels),
                registry=self.registry,
                buckets=tuple(buckets) if buckets is not None else Histogram.DEFAULT_BUCKETS,
            )
            known[full] = metric
            return metric

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return exposition(self.registry)

    def write_textfile(self, path: Path | str) -> None:
        """Write the registry atomically for node-exporter's textfile collector."""
        write_textfile(self.registry, path)

    def _get(self, kind: type[_M], name: str, documentation: str, labels: Sequence[str]) -> _M:
        full = metric_name(self.capability, name)
        with _cache_lock:
            known = _cache.setdefault(self.registry, {})
            if full in known:
                return _checked(known[full], kind, full)
            metric = kind(full, documentation, labelnames=tuple(labels), registry=self.registry)
            known[full] = metric
            return metric


def _checked(metric: MetricWrapperBase, kind: type[_M], name: str) -> _M:
    if not isinstance(metric, kind):
        raise ValueError(f"metric {name} already exists as a {type(metric).__name__}")
    return metric


def exposition(registry: CollectorRegistry) -> bytes:
    """Render ``registry`` in the Prometheus text exposition format."""
    return generate_latest(registry)


def write_textfile(registry: CollectorRegistry, path: Path | str) -> None:
    """Write ``registry`` to ``path`` via a temporary file and a rename (never half-written)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_to_textfile(str(target), registry)
