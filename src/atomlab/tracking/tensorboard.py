"""Mirror a run's telemetry, step progress and user metrics into TensorBoard (optional extra).

Every value is a classic scalar summary (``Summary.Value.simple_value``), the form both
``EventAccumulator.Scalars()`` and a ``tensorboard --logdir`` server read as a scalar (the
summary writer's tensor form reads only as a tensor). Steps are integers that only increase
within a tag, so no two points collide:

- ``telemetry/*`` and ``gpu/<i>/*``: the telemetry sample's index (0, 1, 2 ... one per sample);
- ``metrics/<name>``: the step the metric was logged at;
- ``progress/steps_done`` and ``progress/steps_total``: the index of the progress change;
- ``steps/<name>/duration_s``: step 0, written once when the step completes.

Only ``tensorboard``'s event-file writer and protobufs are used (no torch, no TensorFlow),
imported when a mirror is created. One sub-directory per run; the file is flushed at every step
end and every ``FLUSH_SECS`` by the writer itself::

    RunTracker("demo", steps, mirrors=[TensorBoardMirror("tb-logs")])
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from atomlab.core.errors import InvalidInputError, UnavailableError
from atomlab.tracking.metrics import MetricPoint
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
METRIC_PREFIX = "metrics/"
FLUSH_SECS = 10


def _protos() -> tuple[Any, Any, Any]:
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise UnavailableError(
            "TensorBoard mirroring needs the tensorboard package; "
            "install it with: pip install 'atomlab[tensorboard]'",
            extra="tensorboard",
        ) from None
    return EventFileWriter, event_pb2, summary_pb2


class TensorBoardMirror:
    """Receives telemetry samples, step updates and metrics from a :class:`RunTracker`."""

    def __init__(self, logdir: Path | str) -> None:
        self.logdir = Path(logdir)
        self._file_writer_cls, self._event_pb2, self._summary_pb2 = _protos()
        self._writer: Any = None
        self._seen_steps: set[str] = set()
        self._sample_idx = 0
        self._progress_idx = 0
        self._progress: tuple[int, int] | None = None
        # The event writer is not safe across threads; samples come from the monitor thread.
        self._lock = threading.Lock()

    def open(self, record: RunRecord) -> None:
        target = self.logdir / record.run_id
        try:
            target.mkdir(parents=True, exist_ok=True)
            self._writer = self._file_writer_cls(str(target), flush_secs=FLUSH_SECS)
        except OSError as exc:
            raise bad_logdir(self.logdir, exc) from None

    def _scalars(
        self, values: Sequence[tuple[str, float]], step: int, wall_time: float | None
    ) -> None:
        """One event holding a scalar per tag, all at ``step``."""
        if self._writer is None or not values:
            return
        summary = self._summary_pb2.Summary(
            value=[
                self._summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
                for tag, value in values
            ]
        )
        event = self._event_pb2.Event(
            wall_time=wall_time if wall_time is not None else time.time(),
            step=int(step),
            summary=summary,
        )
        self._writer.add_event(event)

    def add_sample(self, sample: Mapping[str, Any]) -> None:
        with self._lock:
            self._add_sample(sample)

    def _add_sample(self, sample: Mapping[str, Any]) -> None:
        if self._writer is None:
            return
        values: list[tuple[str, float]] = [
            (f"telemetry/{key}", sample[key])
            for key in SCALARS
            if isinstance(sample.get(key), int | float)
        ]
        for gpu in sample.get("gpus") or []:
            values.extend(
                (f"gpu/{gpu.get('index', 0)}/{key}", gpu[key])
                for key in GPU_SCALARS
                if isinstance(gpu.get(key), int | float)
            )
        self._scalars(values, self._sample_idx, _wall_time(sample.get("t")))
        self._sample_idx += 1

    def add_metric(self, name: str, value: float, step: int, wall_time: float | None) -> None:
        with self._lock:
            self._scalars([(METRIC_PREFIX + name, value)], step, wall_time)

    def add_steps(self, record: RunRecord) -> None:
        with self._lock:
            self._add_steps(record)

    def _add_steps(self, record: RunRecord) -> None:
        if self._writer is None:
            return
        progress = (record.steps_done, record.steps_total)
        if progress != self._progress:
            self._progress = progress
            self._scalars(
                [("progress/steps_done", progress[0]), ("progress/steps_total", progress[1])],
                self._progress_idx,
                None,
            )
            self._progress_idx += 1
        for step in record.steps:
            if (
                step.status is StepStatus.COMPLETED
                and step.duration_s is not None
                and step.name not in self._seen_steps
            ):
                self._seen_steps.add(step.name)
                self._scalars(
                    [(f"steps/{step.name}/duration_s", step.duration_s)],
                    0,
                    _wall_time(step.ended_at),
                )

    def flush(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.flush()

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


def export_run(
    record: RunRecord,
    samples: Iterable[Mapping[str, Any]],
    logdir: Path,
    metrics: Mapping[str, Sequence[MetricPoint]] | None = None,
) -> Path:
    """Replay a recorded run (telemetry, steps and metrics) into ``logdir/<run_id>``."""
    mirror = TensorBoardMirror(logdir)
    mirror.open(record)
    try:
        for sample in samples:
            mirror.add_sample(sample)
        for name, points in (metrics or {}).items():
            for point in points:
                mirror.add_metric(name, point.value, point.step, _wall_time(point.at))
        mirror.add_steps(record)
    finally:
        mirror.close()
    return logdir / record.run_id


def bad_logdir(logdir: Path, exc: OSError | str) -> InvalidInputError:
    """A TensorBoard logdir that cannot be used (a file, unwritable, a name too long)."""
    shown = str(logdir) if len(str(logdir)) <= 200 else str(logdir)[:200] + "..."
    reason = exc if isinstance(exc, str) else (exc.strerror or str(exc))
    return InvalidInputError(
        f"cannot write TensorBoard files under {shown!r} ({reason}); pass a writable folder",
        field="logdir",
        value=shown,
    )


def check_logdir(logdir: Path) -> None:
    """Refuse an unusable logdir before a run starts (the mirror would fail at its start)."""
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise bad_logdir(logdir, exc) from None
    if not os.access(logdir, os.W_OK):
        raise bad_logdir(logdir, "not writable")


def _wall_time(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


__all__ = ["METRIC_PREFIX", "TensorBoardMirror", "bad_logdir", "check_logdir", "export_run"]
