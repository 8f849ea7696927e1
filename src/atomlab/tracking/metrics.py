"""User metrics of a run: validated ``(name, value, step)`` points in ``<run_dir>/metrics.jsonl``.

A tracked pipeline logs its own numbers (a loss per epoch, an episode return, a score) next to
the tracker's telemetry::

    run.log_metric("bc/loss", 0.31, step=epoch)
    read_metrics(run_dir)["bc/loss"][-1].value     # sorted by step

Each line is ``{"name", "value", "step", "at", "dt_s"}`` written with one ``write()`` on an
``O_APPEND`` descriptor, so a reader never sees half a point and a killed run keeps every point
logged before the kill.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

from atomlab.core.errors import InvalidInputError
from atomlab.tracking.store import JsonlAppender, iter_jsonl

METRICS_FILE = "metrics.jsonl"
MAX_METRIC_NAME = 128
#: Letters, digits and ``_ . / -``: safe as a TensorBoard tag, a CSV column and a file name part.
METRIC_NAME = re.compile(r"^[A-Za-z0-9_./-]{1,128}$")


@dataclass(frozen=True)
class MetricPoint:
    """One logged value: its step, the value, when (UTC ISO-8601) and seconds since run start."""

    step: int
    value: float
    at: str
    dt_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "value": self.value, "at": self.at, "dt_s": self.dt_s}


def check_metric_name(name: Any) -> str:
    """``name`` if it is a valid metric name; :class:`InvalidInputError` (exit 3) otherwise."""
    if not isinstance(name, str) or not METRIC_NAME.match(name):
        shown = name if not isinstance(name, str) else name[:80]
        raise InvalidInputError(
            f"metric name {shown!r} is not valid; use 1-{MAX_METRIC_NAME} letters, digits or "
            "'_', '.', '/', '-' (e.g. 'bc/loss')",
            field="name",
            value=repr(shown),
        )
    return name


def check_metric_value(name: str, value: Any) -> float:
    """``value`` as a finite float; booleans, text, NaN and infinities are refused."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidInputError(
            f"metric {name!r}: value {value!r} is not a number; log a finite float",
            field="value",
            value=repr(value)[:80],
        )
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInputError(
            f"metric {name!r}: value {value!r} is not finite; log only finite numbers "
            "(a diverged loss is worth a failed step, not a NaN point)",
            field="value",
            value=repr(value),
        )
    return number


def check_step(name: str, step: Any, last: int | None) -> int:
    """A non-negative integer above the name's ``last`` step (TensorBoard drops a series'
    points at and after a step that goes backwards, so a repeated step is refused here)."""
    if isinstance(step, bool) or not isinstance(step, int):
        is_whole = isinstance(step, float) and step.is_integer()
        if not is_whole:
            raise InvalidInputError(
                f"metric {name!r}: step {step!r} is not a whole number; steps are integers >= 0",
                field="step",
                value=repr(step)[:80],
            )
        step = int(step)
    if step < 0:
        raise InvalidInputError(
            f"metric {name!r}: step {step} is negative; steps are integers >= 0",
            field="step",
            value=step,
        )
    if last is not None and step <= last:
        raise InvalidInputError(
            f"metric {name!r}: step {step} is not after the last logged step {last}; each name's "
            "steps must increase (leave step out to use the next one)",
            field="step",
            value=step,
        )
    return int(step)


class MetricLog:
    """The writer side of ``metrics.jsonl`` for one run: validates, numbers steps, appends.

    Thread-safe; ``last_step`` starts from what the file already holds, so a second writer on
    the same run directory continues the series instead of repeating steps.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self._lock = threading.Lock()
        self._last: dict[str, int] = {
            name: points[-1].step for name, points in read_metrics(run_dir).items()
        }
        self._appender: JsonlAppender | None = None

    def last_step(self, name: str) -> int | None:
        with self._lock:
            return self._last.get(name)

    def log(
        self, values: Mapping[str, Any], step: int | None, *, at: str, dt_s: float
    ) -> list[tuple[str, float, int]]:
        """Validate a batch of points (all or nothing), give each its step, append them."""
        with self._lock:
            points: list[tuple[str, float, int]] = []
            for name, value in values.items():
                checked = check_metric_name(name)
                number = check_metric_value(checked, value)
                last = self._last.get(checked)
                chosen = (last + 1 if last is not None else 0) if step is None else step
                points.append((checked, number, check_step(checked, chosen, last)))
            if self._appender is None:
                self._appender = JsonlAppender(self.path)
            for name, number, chosen in points:
                self._appender.append(
                    {"name": name, "value": number, "step": chosen, "at": at, "dt_s": dt_s}
                )
                self._last[name] = chosen
            return points

    def close(self) -> None:
        with self._lock:
            if self._appender is not None:
                self._appender.fsync()
                self._appender.close()
                self._appender = None


def read_metrics(run_dir: Path | str) -> dict[str, list[MetricPoint]]:
    """Every metric of a run, by name, sorted by step; malformed lines are skipped."""
    series: dict[str, list[MetricPoint]] = {}
    for item in iter_jsonl(Path(run_dir) / METRICS_FILE):
        try:
            name = item["name"]
            point = MetricPoint(
                step=int(item["step"]),
                value=float(item["value"]),
                at=str(item.get("at", "")),
                dt_s=float(item.get("dt_s", 0.0)),
            )
        except (KeyError, TypeError, ValueError):
            continue
        if isinstance(name, str):
            series.setdefault(name, []).append(point)
    for points in series.values():
        points.sort(key=lambda p: p.step)
    return series


def summarise_metrics(series: Mapping[str, list[MetricPoint]]) -> dict[str, dict[str, Any]]:
    """Per name: ``last`` value and step, ``min``, ``max`` and the number of points."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(series):
        points = series[name]
        if not points:
            continue
        values = [p.value for p in points]
        out[name] = {
            "last": points[-1].value,
            "last_step": points[-1].step,
            "min": min(values),
            "max": max(values),
            "count": len(points),
        }
    return out


__all__ = [
    "METRICS_FILE",
    "METRIC_NAME",
    "MetricLog",
    "MetricPoint",
    "check_metric_name",
    "check_metric_value",
    "read_metrics",
    "summarise_metrics",
]
