"""Stage 2: the learning pipeline (``atomlab.learning``, contract C3), tracked by the run tracker.

This module is the demo's only contact with the learning pipeline and the tracker's metrics, so
their APIs can change in one place. When the pipeline is not installed in this version of
atomlab, the stage is skipped and says why (:class:`StageSkipped`); it is never imitated.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomlab.core.settings import AtomlabSettings
from atomlab.lab.progress import DemoProgress, LearningProgressView


class StageSkipped(Exception):  # noqa: N818 - a stage outcome, not an error
    """A stage that cannot run here, with the reason shown to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class LearningOutcome:
    """What the pipeline produced, as the report and ``--json`` use it."""

    result: dict[str, Any]
    run_dir: Path
    comparison: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    telemetry: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.result,
            "run_dir": str(self.run_dir),
            "comparison": self.comparison,
            "metrics": {
                name: {"points": len(points), "last": points[-1]["value"] if points else None}
                for name, points in self.curves.items()
            },
            "notes": self.notes,
        }


def learning_pipeline() -> tuple[Any, Any]:
    """``(PipelineConfig, run_pipeline)`` of :mod:`atomlab.learning`; :class:`StageSkipped` when
    this atomlab has no learning pipeline or its extra (torch) is not installed."""
    try:
        module = importlib.import_module("atomlab.learning")
    except ImportError as exc:
        raise StageSkipped(f"the learning pipeline cannot be imported ({exc})") from None
    config = getattr(module, "PipelineConfig", None)
    run = getattr(module, "run_pipeline", None)
    if config is None or run is None:
        raise StageSkipped(
            "atomlab.learning.run_pipeline is not available in this version of atomlab "
            "(the learning pipeline has not landed yet); `atomlab learn run --preset demo` "
            "runs it on its own once it has"
        )
    return config, run


def run_learning(
    *,
    home: Path,
    seed: int,
    preset: str,
    progress: DemoProgress,
    settings: AtomlabSettings | None = None,
) -> LearningOutcome:
    """Run the pipeline's ``preset`` with ``seed`` in ``home``; its tracker reports through
    ``progress``."""
    config_type, run_pipeline = learning_pipeline()
    extra: dict[str, Any] = {}
    if settings is not None and "settings" in inspect.signature(run_pipeline).parameters:
        extra["settings"] = settings  # the demo's own settings, not the calling shell's
    result = run_pipeline(
        config_type(preset=preset, seed=seed, home=home),
        progress=LearningProgressView(progress),
        **extra,
    )
    data: dict[str, Any] = result.to_dict() if hasattr(result, "to_dict") else {}
    run_dir = Path(getattr(result, "run_dir", data.get("run_dir", home)))
    outcome = LearningOutcome(
        result={k: v for k, v in data.items() if k != "comparison"},
        run_dir=run_dir,
        comparison=[dict(row) for row in getattr(result, "comparison", data.get("comparison", []))],
    )
    outcome.curves, note = training_curves(run_dir)
    if note:
        outcome.notes.append(note)
    outcome.telemetry = telemetry_samples(run_dir)
    return outcome


def training_curves(run_dir: Path) -> tuple[dict[str, list[dict[str, float]]], str | None]:
    """The metrics the run logged (C1 ``read_metrics``), as ``{name: [{step, value}]}``."""
    tracking = importlib.import_module("atomlab.tracking")
    read_metrics = getattr(tracking, "read_metrics", None)
    if read_metrics is None:
        return {}, "this atomlab's run tracker cannot read logged metrics yet (read_metrics)"
    curves: dict[str, list[dict[str, float]]] = {}
    for name, points in read_metrics(run_dir).items():
        curves[name] = [{"step": int(p.step), "value": float(p.value)} for p in points]
    return curves, None


def telemetry_samples(run_dir: Path) -> list[dict[str, Any]]:
    """The run's telemetry samples (``telemetry.jsonl``), oldest first."""
    from atomlab.tracking import iter_jsonl

    path = run_dir / "telemetry.jsonl"
    return list(iter_jsonl(path)) if path.is_file() else []
