"""Mirror a run's telemetry and step progress into TensorBoard event files (optional extra).

Uses ``tensorboard.summary.Writer``, which needs only numpy (no torch, no TensorFlow), imported
when a mirror is created. One sub-directory per run (TensorBoard reads one event file per
directory); the writer is flushed at every step end so a killed run loses at most one step::

    RunTracker("demo", steps, mirrors=[TensorBoardMirror("tb-logs")])
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from atomlab.core.errors import UnavailableError
from atomlab.tracking.models import RunRecord, StepStatus

SCALARS = (
    "proc_cpu_pct",
    "proc_cpu_norm_pct",
    "proc_rss_mb",
    "proc_count",
    "sys_cpu_pct",
    "sys_mem_pct",
    "disk_read_mb_s",
    "disk_write_mb_s",
    "net_sent_mb_s",
    "net_recv_mb_s",
)
GPU_SCALARS = ("util_pct", "mem_used_mb", "run_mem_mb", "temp_c", "power_w")


def _writer_class() -> Any:
    try:
        from tensorboard.summary import Writer
    except ImportError:
        raise UnavailableError(
            "TensorBoard mirroring needs the tensorboard package; "
            "install it with: pip install 'atomlab[tensorboard]'",
            extra="tensorboard",
        ) from None
    return Writer


class TensorBoardMirror:
    """Receives telemetry samples and step updates from a :class:`RunTracker`."""

    def __init__(self, logdir: Path | str) -> None:
        self.logdir = Path(logdir)
        self._writer_cls = _writer_class()
        self._writer: Any = None
        self._seen_steps: set[str] = set()
        # The summary writer is not thread-safe; samples come from the monitor thread.
        self._lock = threading.Lock()

    def open(self, record: RunRecord) -> None:
        target = self.logdir / record.run_id
        target.mkdir(parents=True, exist_ok=True)
        self._writer = self._writer_cls(str(target))

    def add_sample(self, sample: Mapping[str, Any]) -> None:
        with self._lock:
            self._add_sample(sample)

    def _add_sample(self, sample: Mapping[str, Any]) -> None:
        if self._writer is None:
            return
        step = round(float(sample.get("dt_s", 0.0)))
        wall = _wall_time(sample.get("t"))
        for key in SCALARS:
            value = sample.get(key)
            if value is not None:
                self._writer.add_scalar(f"telemetry/{key}", value, step, wall_time=wall)
        for gpu in sample.get("gpus") or []:
            for key in GPU_SCALARS:
                value = gpu.get(key)
                if value is not None:
                    tag = f"gpu/{gpu.get('index', 0)}/{key}"
                    self._writer.add_scalar(tag, value, step, wall_time=wall)

    def add_steps(self, record: RunRecord) -> None:
        with self._lock:
            self._add_steps(record)

    def _add_steps(self, record: RunRecord) -> None:
        if self._writer is None:
            return
        done = record.steps_done
        self._writer.add_scalar("progress/steps_done", done, done)
        self._writer.add_scalar("progress/steps_total", record.steps_total, done)
        for step in record.steps:
            if step.status is StepStatus.COMPLETED and step.name not in self._seen_steps:
                self._seen_steps.add(step.name)
                self._writer.add_scalar(f"steps/{step.name}/duration_s", step.duration_s, 0)

    def flush(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.flush()

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


def export_run(record: RunRecord, samples: Iterable[Mapping[str, Any]], logdir: Path) -> Path:
    """Replay a recorded run (its telemetry and steps) into ``logdir/<run_id>``."""
    mirror = TensorBoardMirror(logdir)
    mirror.open(record)
    for sample in samples:
        mirror.add_sample(sample)
    mirror.add_steps(record)
    mirror.close()
    return logdir / record.run_id


def _wall_time(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


__all__ = ["TensorBoardMirror", "export_run"]
