"""Run tracking and telemetry for long pipelines (in-process Python or subprocess steps).

    from atomlab.tracking import RunTracker

    with RunTracker("imitation", ["collect", "train"], home=home) as run:
        with run.step("collect", units=100):
            ...
            run.advance()
            run.log_metric("collect/return", 1.5)   # metrics.jsonl, TensorBoard, runs show
        run.run_step("train", ["python", "train.py"])

See docs/tracking.md for the data model, files, the ETA algorithm and the rules.
"""

from atomlab.tracking import perf, report
from atomlab.tracking.eta import estimate_remaining, format_duration
from atomlab.tracking.export import TABLE_FORMATS, export_tables
from atomlab.tracking.gpu import GpuProbe
from atomlab.tracking.history import (
    RunIndex,
    RunSummary,
    check_run_hint,
    check_statuses,
    parse_since,
)
from atomlab.tracking.metrics import MetricPoint, read_metrics, summarise_metrics
from atomlab.tracking.models import (
    ArtifactRecord,
    EtaEstimate,
    PerfResult,
    Recommendation,
    RunRecord,
    RunStatus,
    Severity,
    StepRecord,
    StepSpec,
    StepStatus,
)
from atomlab.tracking.progress import (
    NullProgress,
    PlainProgress,
    ProgressState,
    ProgressView,
    RichProgress,
    auto_view,
)
from atomlab.tracking.recommend import RuleInput, RuleThresholds, evaluate
from atomlab.tracking.sampler import TelemetrySampler
from atomlab.tracking.store import iter_jsonl, read_run, runs_root, tail_jsonl
from atomlab.tracking.tensorboard import TensorBoardMirror, check_logdir
from atomlab.tracking.tracker import (
    RunCancelled,
    RunTracker,
    StepFailedError,
    report_progress,
)

__all__ = [
    "TABLE_FORMATS",
    "ArtifactRecord",
    "EtaEstimate",
    "GpuProbe",
    "MetricPoint",
    "NullProgress",
    "PerfResult",
    "PlainProgress",
    "ProgressState",
    "ProgressView",
    "Recommendation",
    "RichProgress",
    "RuleInput",
    "RuleThresholds",
    "RunCancelled",
    "RunIndex",
    "RunRecord",
    "RunStatus",
    "RunSummary",
    "RunTracker",
    "Severity",
    "StepFailedError",
    "StepRecord",
    "StepSpec",
    "StepStatus",
    "TelemetrySampler",
    "TensorBoardMirror",
    "auto_view",
    "check_logdir",
    "check_run_hint",
    "check_statuses",
    "estimate_remaining",
    "evaluate",
    "export_tables",
    "format_duration",
    "iter_jsonl",
    "parse_since",
    "perf",
    "read_metrics",
    "read_run",
    "report",
    "report_progress",
    "runs_root",
    "summarise_metrics",
    "tail_jsonl",
]
