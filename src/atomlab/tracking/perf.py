"""Performance suites: measure a throughput, judge it against the suite's stored history.

A suite returns one number (higher is better unless declared otherwise). Its baseline is the
median of its last five non-failed results in the run index; a result ``>= 25 %`` worse is a
soft breach, ``>= 50 %`` worse fails, and the first result, with no baseline, passes with a
note instead of a guess. Built-in suites measure atomlab itself (core SQLite writes, the
tracker); user suites are commands declared in ``atomlab.yaml``::

    tracking:
      perf_suites:
        - name: sim-scan
          command: python bench_scan.py      # prints {"lines_per_s": 812.5} (last JSON line)
          metric: lines_per_s                # a JSON key, or a regex with one group
          unit: lines/s
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomlab.core.clock import Clock, SystemClock, utc_iso
from atomlab.core.errors import InvalidInputError
from atomlab.core.settings import TrackingSettings
from atomlab.tracking.history import HISTORY_RUNS, RunIndex
from atomlab.tracking.models import PerfResult, Recommendation, Severity

SOFT_RATIO = 0.75
FAIL_RATIO = 0.5
DEFAULT_COMMAND_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class PerfSuite:
    """A named measurement: ``measure()`` returns the metric's value."""

    name: str
    metric: str
    unit: str
    measure: Callable[[], float | None]
    higher_is_better: bool = True
    description: str = ""


_REGISTRY: dict[str, PerfSuite] = {}


def register_suite(suite: PerfSuite) -> None:
    """Make ``suite`` available to ``atomlab runs perf-tests`` (capabilities call this)."""
    _REGISTRY[suite.name] = suite


def _tracker_events() -> float:
    from atomlab.tracking.tracker import RunTracker

    with tempfile.TemporaryDirectory() as home:
        steps = [f"s{i}" for i in range(200)]
        tracker = RunTracker(
            "perf-events",
            steps,
            home=Path(home),
            settings=TrackingSettings(gpu=False),
            telemetry=False,
            monitor=False,
            handle_signals=False,
        )
        with tracker:
            start = time.perf_counter()
            for name in steps:
                with tracker.step(name):
                    tracker.advance()
            elapsed = time.perf_counter() - start
    return 2 * len(steps) / elapsed


def _telemetry_samples() -> float:
    from atomlab.tracking.sampler import TelemetrySampler

    sampler = TelemetrySampler()
    count = 200
    start = time.perf_counter()
    for _ in range(count):
        sampler.sample()
    return count / (time.perf_counter() - start)


def _sqlite_batch_rows() -> float:
    from atomlab.core.sqlite import BatchWriter, connect, migrate

    rows = 20_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.sqlite"
        conn = connect(path)
        migrate(conn, ["CREATE TABLE samples (idx INTEGER PRIMARY KEY, value REAL);"])
        conn.close()

        def write(db: Any, batch: list[tuple[int, float]]) -> None:
            db.executemany("INSERT INTO samples VALUES (?, ?)", batch)

        start = time.perf_counter()
        with BatchWriter(path, write) as writer:
            for i in range(rows):
                writer.put((i, i * 0.5))
        return rows / (time.perf_counter() - start)


register_suite(
    PerfSuite(
        "core.sqlite-batch",
        "rows_per_s",
        "rows/s",
        _sqlite_batch_rows,
        description="rows per second through atomlab.core.sqlite.BatchWriter (WAL, batches of 500)",
    )
)
register_suite(
    PerfSuite(
        "tracking.events",
        "step_events_per_s",
        "events/s",
        _tracker_events,
        description="step start/finish events persisted per second (run.json replace + event)",
    )
)
register_suite(
    PerfSuite(
        "tracking.telemetry",
        "samples_per_s",
        "samples/s",
        _telemetry_samples,
        description="telemetry samples of the process tree and system per second",
    )
)


def command_suite(spec: Mapping[str, Any]) -> PerfSuite:
    """A suite from a ``tracking.perf_suites`` entry: run ``command``, read ``metric``."""
    try:
        name, command, metric = str(spec["name"]), str(spec["command"]), str(spec["metric"])
    except KeyError as exc:
        raise InvalidInputError(
            f"tracking.perf_suites entry {dict(spec)!r} lacks {exc.args[0]!r}; "
            "each entry needs name, command and metric",
            field="tracking.perf_suites",
        ) from None
    timeout = float(spec.get("timeout_s", DEFAULT_COMMAND_TIMEOUT_S))

    def measure() -> float | None:
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            return None
        return read_metric(done.stdout, metric)

    return PerfSuite(
        name,
        metric,
        str(spec.get("unit", "")),
        measure,
        higher_is_better=bool(spec.get("higher_is_better", True)),
        description=command,
    )


def read_metric(stdout: str, metric: str) -> float | None:
    """The value of ``metric`` in the last JSON object line of ``stdout``, else a regex group."""
    for line in reversed(stdout.strip().splitlines()):
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            if isinstance(data, dict) and metric in data:
                return float(data[metric])
    with contextlib.suppress(re.error, IndexError, ValueError, AttributeError):
        match = re.search(metric, stdout)
        if match is not None:
            return float(match.group(1))
    return None


def available_suites(settings: TrackingSettings) -> dict[str, PerfSuite]:
    suites = dict(_REGISTRY)
    for spec in settings.perf_suites:
        suite = command_suite(spec)
        suites[suite.name] = suite
    return suites


def select_suites(settings: TrackingSettings, names: Sequence[str]) -> list[PerfSuite]:
    suites = available_suites(settings)
    unknown = [n for n in names if n not in suites]
    if unknown:
        raise InvalidInputError(
            f"unknown perf suite(s) {unknown}; known: {', '.join(sorted(suites))}",
            field="suite",
        )
    return [suites[n] for n in names] if names else list(suites.values())


def judge(
    suite: PerfSuite, value: float | None, history: Sequence[float], *, clock: Clock | None = None
) -> PerfResult:
    """Compare ``value`` with the median of ``history`` (the suite's recent results)."""
    result = PerfResult(
        suite=suite.name,
        metric=suite.metric,
        value=value,
        unit=suite.unit,
        higher_is_better=suite.higher_is_better,
        baseline_runs=len(history),
        created_at=utc_iso((clock or SystemClock()).now()),
    )
    if value is None:
        result.status = "failed"
        result.note = "the suite produced no value (command failed or metric not found)"
        return result
    if not history:
        result.note = "no baseline yet; this result starts the suite's history"
        return result
    baseline = statistics.median(history)
    result.baseline = baseline
    if baseline <= 0 or value <= 0:
        result.ratio = None
        result.note = "baseline or value is not positive; not judged"
        return result
    ratio = value / baseline if suite.higher_is_better else baseline / value
    result.ratio = round(ratio, 3)
    if ratio <= FAIL_RATIO:
        result.status = "failed"
    elif ratio <= SOFT_RATIO:
        result.status = "soft-breach"
    return result


def run_suites(
    index: RunIndex,
    suites: Sequence[PerfSuite],
    *,
    run_id: str | None = None,
    on_suite: Callable[[PerfSuite], Any] | None = None,
) -> list[PerfResult]:
    """Measure each suite, judge it against its history, store the result."""
    results = []
    for suite in suites:
        step = on_suite(suite) if on_suite is not None else contextlib.nullcontext()
        error = None
        with step:
            history = index.perf_history(suite.name, suite.metric, runs=HISTORY_RUNS)
            try:
                value = suite.measure()
            except Exception as exc:  # one broken suite must not hide the others' results
                value, error = None, f"{type(exc).__name__}: {exc}"
        result = judge(suite, value, history)
        if error is not None:
            result.note = f"the suite raised {error}"
        result.run_id = run_id
        index.add_perf_result(result)
        results.append(result)
    return results


def recommendations_for(results: Sequence[PerfResult]) -> list[Recommendation]:
    """A recommendation per regression, and an info note per suite without a baseline."""
    findings = []
    for r in results:
        if r.status in ("soft-breach", "failed") and r.baseline is not None:
            worse = 100 * (1 - (r.ratio or 0))
            findings.append(
                Recommendation(
                    rule="throughput_below_baseline",
                    severity=Severity.CRITICAL if r.status == "failed" else Severity.WARNING,
                    step=r.suite,
                    message=f"{r.suite}: {r.metric} {r.value:.4g} {r.unit} is {worse:.0f}% "
                    f"worse than the baseline {r.baseline:.4g}",
                    evidence={
                        "value": r.value,
                        "baseline": r.baseline,
                        "ratio": r.ratio,
                        "baseline_runs": r.baseline_runs,
                    },
                    actions=[
                        "rerun the suite to rule out a noisy neighbour (`atomlab runs ps`)",
                        "compare with the last passing commit or configuration",
                    ],
                )
            )
        elif r.status == "failed":
            findings.append(
                Recommendation(
                    rule="perf_suite_failed",
                    severity=Severity.CRITICAL,
                    step=r.suite,
                    message=f"{r.suite} produced no value",
                    evidence={"note": r.note},
                    actions=["run the suite's command by hand and check its output"],
                )
            )
        elif r.baseline is None and r.note:
            findings.append(
                Recommendation(
                    rule="baseline_missing",
                    severity=Severity.INFO,
                    step=r.suite,
                    message=f"{r.suite} has no baseline yet; later runs are judged against it",
                    evidence={"value": r.value},
                    actions=["run the suite a few more times on a quiet machine"],
                )
            )
    return findings


__all__ = [
    "FAIL_RATIO",
    "SOFT_RATIO",
    "PerfSuite",
    "available_suites",
    "command_suite",
    "judge",
    "read_metric",
    "recommendations_for",
    "register_suite",
    "run_suites",
    "select_suites",
]
