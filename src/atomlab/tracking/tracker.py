"""``RunTracker``: one tracked run of a pipeline with declared steps.

    with RunTracker("imitation", ["collect", "train", "evaluate"]) as run:
        with run.step("collect", units=100):
            for episode in range(100):
                ...
                run.advance()
        run.run_step("train", ["python", "train.py"])   # a subprocess in its own process group
        run.skip_step("evaluate", "no simulator")

While the run lives, a monitor thread samples telemetry (the whole process tree), renews the
heartbeat and refreshes the progress view; SIGINT, SIGTERM and SIGHUP mark the run cancelled,
forward the signal to the running step's process group and write ``run.json`` at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from atomlab.core.clock import Clock, SystemClock, utc_iso
from atomlab.core.errors import AtomlabError, InvalidInputError
from atomlab.core.logging import get_logger
from atomlab.core.settings import TrackingSettings, load_settings
from atomlab.tracking import recommend
from atomlab.tracking.artifacts import store_artifact
from atomlab.tracking.eta import estimate_remaining
from atomlab.tracking.gpu import GpuProbe
from atomlab.tracking.groups import process_started
from atomlab.tracking.history import RunIndex
from atomlab.tracking.metrics import MetricLog
from atomlab.tracking.models import (
    RunRecord,
    RunStatus,
    StepRecord,
    StepSpec,
    StepStatus,
    step_specs,
)
from atomlab.tracking.progress import NullProgress, ProgressState, ProgressView
from atomlab.tracking.sampler import TelemetrySampler
from atomlab.tracking.signals import SignalWatch
from atomlab.tracking.store import (
    EVENTS_FILE,
    LOGS_DIR,
    PROGRESS_DIR,
    TELEMETRY_FILE,
    JsonlAppender,
    RunLock,
    create_run_dir,
    runs_root,
    save_run,
    write_json_atomic,
)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PIPELINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:+-]{0,127}$")
CHILD_GRACE_S = 5.0
CHILD_POLL_S = 0.25
MONITOR_TICK_S = 1.0
WATCHDOG_GRACE_S = 0.5
SAMPLES_KEPT = 86_400
LOG_TAIL_LINES = 20
ENV_RUN_ID = "ATOMLAB_RUN_ID"
ENV_RUN_DIR = "ATOMLAB_RUN_DIR"
ENV_STEP = "ATOMLAB_STEP"
ENV_PROGRESS_FILE = "ATOMLAB_PROGRESS_FILE"

_log = get_logger(__name__)
_STEP_END = {
    RunStatus.COMPLETED: StepStatus.COMPLETED,
    RunStatus.FAILED: StepStatus.FAILED,
    RunStatus.CANCELLED: StepStatus.CANCELLED,
}


class RunCancelled(BaseException):
    """Raised in the tracked code when the run received SIGINT, SIGTERM or SIGHUP."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"run cancelled by {signal.Signals(signum).name}")


class StepFailedError(AtomlabError):
    """A step's subprocess ended with a non-zero exit status."""

    type_name = "step_failed"


def report_progress(done: float, total: float | None = None) -> None:
    """Report in-step progress from inside a subprocess step (no-op outside a tracked step)."""
    path = os.environ.get(ENV_PROGRESS_FILE)
    if path:
        write_json_atomic(Path(path), {"done": done, "total": total})


class RunTracker:
    """Tracks one run of ``pipeline`` through its declared ``steps``; use it as a context
    manager so every exit (success, error, signal) records a terminal state."""

    def __init__(
        self,
        pipeline: str,
        steps: Sequence[StepSpec | str],
        *,
        home: Path | None = None,
        settings: TrackingSettings | None = None,
        clock: Clock | None = None,
        progress: ProgressView | None = None,
        telemetry: bool = True,
        gpu: GpuProbe | None = None,
        handle_signals: bool = True,
        monitor: bool = True,
        tags: Mapping[str, str] | None = None,
        mirrors: Sequence[Any] = (),
    ) -> None:
        if not isinstance(pipeline, str) or not PIPELINE_NAME.match(pipeline):
            shown = str(pipeline)[:60]
            raise InvalidInputError(
                f"pipeline name {shown!r} is not valid; use 1-128 letters, digits, spaces or "
                "'_ . : + -', starting with a letter or digit (no '/': it is not a path)",
                field="pipeline",
                value=shown,
            )
        self.pipeline = pipeline
        self.specs = step_specs(list(steps))
        if home is None or settings is None:
            # Same sources as the CLI: ATOMLAB_HOME / ATOMLAB_TRACKING__* / atomlab.yaml.
            loaded = load_settings().settings
            home = home if home is not None else loaded.home
            settings = settings or loaded.tracking
        self.home = Path(home)
        self.settings = settings
        self.clock = clock or SystemClock()
        self.view: ProgressView = progress or NullProgress()
        self._telemetry_enabled = telemetry
        self._gpu = gpu if gpu is not None else (GpuProbe() if self.settings.gpu else None)
        self._handle_signals = handle_signals
        self._monitor_enabled = monitor
        self._tags = dict(tags or {})
        self._mirrors = list(mirrors)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._child: subprocess.Popen[bytes] | None = None
        self._signal: int | None = None
        self._finishing = False
        self._finished = False
        self._watch = SignalWatch()
        # Slim samples for the rules and the summary: a day at 1 Hz, so memory stays bounded.
        self._samples: deque[dict[str, Any]] = deque(maxlen=SAMPLES_KEPT)
        self._history: list[dict[str, float]] = []
        self._step_started: dict[str, float] = {}
        self._run_started = 0.0
        self._next_sample = 0.0
        self._next_heartbeat = 0.0
        self.record: RunRecord | None = None
        self.index: RunIndex | None = None
        self._run_lock: RunLock | None = None
        self._events: JsonlAppender | None = None
        self._telemetry: JsonlAppender | None = None
        self._sampler: TelemetrySampler | None = None
        self._metrics: MetricLog | None = None

    # -- life cycle --------------------------------------------------------------------------

    def __enter__(self) -> RunTracker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.finish()
        elif isinstance(exc, RunCancelled | KeyboardInterrupt):
            signum = exc.signum if isinstance(exc, RunCancelled) else signal.SIGINT
            self.finish(RunStatus.CANCELLED, reason=f"received {signal.Signals(signum).name}")
        else:
            self.finish(RunStatus.FAILED, reason=_describe(exc))

    @property
    def run_id(self) -> str:
        return self._require().run_id

    @property
    def run_dir(self) -> Path:
        return Path(self._require().run_dir)

    def start(self) -> RunRecord:
        """Create the run directory, take its lock, index it and start the monitor."""
        root = runs_root(self.home)
        now = self.clock.now()
        run_id, run_dir = create_run_dir(root, self.pipeline, now)
        self._run_lock = RunLock(run_dir)
        if not self._run_lock.acquire():  # pragma: no cover - the directory is brand new
            raise AtomlabError(f"run {run_id} is locked by another process")
        stamp = utc_iso(now)
        self.record = RunRecord(
            run_id=run_id,
            pipeline=self.pipeline,
            status=RunStatus.RUNNING,
            created_at=stamp,
            started_at=stamp,
            heartbeat_at=stamp,
            host=socket.gethostname(),
            pid=os.getpid(),
            run_dir=str(run_dir),
            tags=self._tags,
            steps=[
                StepRecord(
                    name=spec.name,
                    title=spec.title,
                    order=i,
                    expected_s=spec.expected_s,
                    units_total=spec.units,
                )
                for i, spec in enumerate(self.specs, start=1)
            ],
        )
        self._run_started = self.clock.monotonic()
        self._events = JsonlAppender(run_dir / EVENTS_FILE)
        self._telemetry = JsonlAppender(run_dir / TELEMETRY_FILE)
        self._metrics = MetricLog(run_dir)
        self.index = self._open_index()
        if self.index is not None:
            with contextlib.suppress(sqlite3.Error):
                self._history = self.index.step_history(self.pipeline, exclude=run_id)
        self._refresh_eta()
        self._persist(index=True)
        self._event("run.started", pid=os.getpid(), steps=[s.name for s in self.specs])
        self.view.event(f"[{run_id}] started {self.pipeline} ({len(self.specs)} steps)")
        try:
            self._start_services()
        except BaseException as exc:  # a half-started run still ends with a recorded state
            self.finish(RunStatus.FAILED, reason=f"could not start: {_describe(exc)}")
            raise
        return self.record

    def _start_services(self) -> None:
        for mirror in self._mirrors:
            mirror.open(self._require())
        self._retain()
        if self._telemetry_enabled:
            self._sampler = TelemetrySampler(
                gpu=self._gpu, clock=self.clock, rescan_interval_s=self.settings.process_rescan_s
            )
        if self._handle_signals:
            self._install_signal_handlers()
        if self._monitor_enabled:
            self._thread = threading.Thread(target=self._monitor, name="run-monitor", daemon=True)
            self._thread.start()

    def finish(self, status: RunStatus = RunStatus.COMPLETED, *, reason: str | None = None) -> None:
        """End the run: mark open steps, persist at once, stop the step group, then evaluate."""
        record = self._require()
        if self._finished:
            return
        self._finishing = True
        now = utc_iso(self.clock.now())
        with self._lock:
            for step in record.steps:
                if step.status is StepStatus.RUNNING:
                    self._close_step(step, _STEP_END[status], reason)
                elif step.status is StepStatus.PENDING and status is not RunStatus.COMPLETED:
                    step.status = StepStatus.SKIPPED
                    step.reason = f"run {status.value}"
                elif step.status is StepStatus.PENDING:
                    step.status = StepStatus.SKIPPED
                    step.reason = "never started"
            record.status = status
            record.reason = reason
            record.ended_at = now
            record.duration_s = round(self.clock.monotonic() - self._run_started, 3)
            if self._signal is not None:
                record.exit_signal = signal.Signals(self._signal).name
            record.eta.remaining_s = 0.0 if status is RunStatus.COMPLETED else None
            # The terminal state is on disk before anything slow (stopping the step group).
            self._persist(fsync=True, index=True)
        self._event(f"run.{status.value}", reason=reason)
        self._stop.set()
        self._watch.wake()
        self._stop_child()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._restore_signal_handlers()
        self._take_final_sample()
        self._summarise()
        with self._lock:
            self._persist(fsync=True, index=True)
        self.view.event(
            f"[{record.run_id}] {status.value} after {record.duration_s:.1f} s"
            + (f": {reason}" if reason else "")
        )
        self.view.close()
        self._close_files()
        self._finished = True

    # -- steps -------------------------------------------------------------------------------

    def start_step(self, name: str, *, units: float | None = None) -> StepRecord:
        record = self._require()
        with self._lock:
            step = record.step(name)
            if step.status is not StepStatus.PENDING:
                raise InvalidInputError(
                    f"step {name!r} is already {step.status.value}; each step starts once",
                    step=name,
                )
            running = record.current_step
            if running is not None:
                self._close_step(running, StepStatus.COMPLETED, None)
            step.status = StepStatus.RUNNING
            step.started_at = utc_iso(self.clock.now())
            if units is not None:
                step.units_total = units
            self._step_started[name] = self.clock.monotonic()
            self._refresh_eta()
            self._persist()
        self._event("step.started", step=name)
        self.view.event(
            f"[{record.run_id}] Step {record.position(step)}/{record.steps_total}: "
            f"{step.label} started"
        )
        self._refresh_view()
        if self._sampler is not None:
            self._sampler.tree.invalidate()
        return step

    def advance(self, units: float = 1.0, *, done: float | None = None) -> None:
        """Count progress inside the running step: ``units`` more, or ``done`` in total."""
        step = self._require().current_step
        if step is None:
            return
        step.units_done = done if done is not None else step.units_done + units

    def finish_step(self, name: str | None = None) -> StepRecord:
        return self._end_step(name, StepStatus.COMPLETED, None)

    def fail_step(self, name: str | None = None, reason: str = "failed") -> StepRecord:
        return self._end_step(name, StepStatus.FAILED, reason)

    def skip_step(self, name: str, reason: str = "skipped") -> StepRecord:
        """Skip a pending step: it leaves the step count N and the ETA."""
        record = self._require()
        with self._lock:
            step = record.step(name)
            if step.status is not StepStatus.PENDING:
                raise InvalidInputError(
                    f"step {name!r} is {step.status.value}; only pending steps can be skipped",
                    step=name,
                )
            step.status = StepStatus.SKIPPED
            step.reason = reason
            self._refresh_eta()
            self._persist()
        self._event("step.skipped", step=name, reason=reason)
        self.view.event(f"[{record.run_id}] {step.label} skipped: {reason}")
        return step

    @contextlib.contextmanager
    def step(self, name: str, *, units: float | None = None) -> Iterator[StepRecord]:
        """Run a block as step ``name``: completed on success, failed on an exception."""
        step = self.start_step(name, units=units)
        try:
            yield step
        except (RunCancelled, KeyboardInterrupt):
            raise  # the run ends cancelled; finish() marks the step
        except BaseException as exc:
            if step.status is StepStatus.RUNNING:
                self.fail_step(name, _describe(exc))
            raise
        if step.status is StepStatus.RUNNING:
            self.finish_step(name)

    def run_step(
        self,
        name: str,
        command: Sequence[str] | str,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        shell: bool = False,
    ) -> int:
        """Run ``command`` as step ``name`` in its own process group; raise if it fails.

        Output goes to ``<run>/logs/NN-<step>.log``. The child finds the run in
        ``ATOMLAB_RUN_ID``/``ATOMLAB_STEP`` and may report in-step progress with
        :func:`report_progress` (it writes ``ATOMLAB_PROGRESS_FILE``).
        """
        record = self._require()
        step = self.start_step(name)
        argv: list[str] = [command] if isinstance(command, str) else list(command)
        log_path = self.run_dir / LOGS_DIR / f"{step.order:02d}-{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        progress_file = self.run_dir / PROGRESS_DIR / f"{name}.json"
        progress_file.parent.mkdir(exist_ok=True)
        child_env = {
            **os.environ,
            **(env or {}),
            ENV_RUN_ID: record.run_id,
            ENV_RUN_DIR: str(self.run_dir),
            ENV_STEP: name,
            ENV_PROGRESS_FILE: str(progress_file),
        }
        with log_path.open("ab") as log:
            try:
                child = subprocess.Popen(
                    argv[0] if shell else argv,
                    shell=shell,
                    cwd=cwd,
                    env=child_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                self.fail_step(name, f"cannot start {argv[0]!r}: {exc.strerror}")
                raise StepFailedError(
                    f"step {name!r} could not start {argv[0]!r}: {exc.strerror}; "
                    "check the command and PATH",
                    step=name,
                    run_id=record.run_id,
                ) from None
        with self._lock:
            self._child = child
            step.command = argv
            step.pid = child.pid
            step.pid_started = process_started(child.pid)
            step.log_path = str(log_path)
            self._persist()
        if self._sampler is not None:
            self._sampler.tree.watch(child.pid)
        self.view.event(f"[{record.run_id}]   pid {child.pid}, output in {log_path}")
        code = self._wait_child(child, step, progress_file)
        with self._lock:
            self._child = None
            step.exit_code = code
        if code == 0:
            self.finish_step(name)
            return code
        reason = f"exit status {code}" if code > 0 else f"killed by {_signal_name(-code)}"
        self.fail_step(name, reason)
        tail = _tail_text(log_path, LOG_TAIL_LINES)
        if tail:
            self.view.event(f"[{record.run_id}]   last lines of {log_path.name}:")
            for line in tail.splitlines():
                self.view.event(f"  | {line}")
        raise StepFailedError(
            f"step {name!r} failed ({reason}); its output is in {log_path}",
            step=name,
            run_id=record.run_id,
            exit_code=code,
            log=str(log_path),
            log_tail=tail,
        )

    # -- user metrics, params and artifacts ---------------------------------------------------

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Log one value of metric ``name`` (e.g. ``"bc/loss"``) at ``step``.

        ``step=None`` is one more than the name's last step (the first is 0); steps are
        integers that increase per name. A bad name, a non-finite value or a step that does
        not increase raises :class:`InvalidInputError` and logs nothing.
        """
        self.log_metrics({name: value}, step=step)

    def log_metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        """Log several metrics at one step (each name's next step when ``step`` is None)."""
        self._require()
        if self._metrics is None:
            raise InvalidInputError("the run has ended; log metrics while it runs")
        now = self.clock.now()
        points = self._metrics.log(
            values,
            step,
            at=utc_iso(now),
            dt_s=round(self.clock.monotonic() - self._run_started, 6),
        )
        wall = now.timestamp()
        for mirror in self._mirrors:
            add = getattr(mirror, "add_metric", None)
            if add is None:
                continue
            with contextlib.suppress(Exception):
                for name, number, chosen in points:
                    add(name, number, chosen, wall)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Merge ``params`` (JSON values: numbers, text, lists, objects) into ``run.json``."""
        record = self._require()
        if not isinstance(params, Mapping):
            raise InvalidInputError("params must be a mapping of names to JSON values")
        clean: dict[str, Any] = {}
        for key, value in params.items():
            if not isinstance(key, str) or not key.strip() or len(key) > 256:
                raise InvalidInputError(
                    f"param name {str(key)[:80]!r} must be non-empty text of at most 256 "
                    "characters",
                    field="params",
                )
            try:
                clean[key] = json.loads(json.dumps(value, allow_nan=False))
            except (TypeError, ValueError, RecursionError) as exc:
                raise InvalidInputError(
                    f"param {key!r} = {str(value)[:80]!r} is not a JSON value ({exc}); log "
                    "numbers, text, booleans, lists or mappings of them (no NaN or inf)",
                    field="params",
                    value=key,
                ) from None
        with self._lock:
            record.params.update(clean)
            self._persist()
        self._event("run.params", names=sorted(clean))

    def log_artifact(
        self, path: Path | str, *, name: str | None = None, kind: str | None = None
    ) -> Path:
        """Copy the file ``path`` into ``<run_dir>/artifacts/<name>``; return the stored copy.

        The run's ``artifacts`` list gets ``name``, ``path`` (relative to the run directory),
        ``bytes``, ``sha256`` and ``kind``; logging a name again replaces the earlier file.
        """
        record = self._require()
        artifact = store_artifact(self.run_dir, path, name=name, kind=kind)
        with self._lock:
            record.artifacts = [a for a in record.artifacts if a.name != artifact.name]
            record.artifacts.append(artifact)
            self._persist()
        self._event("run.artifact", artifact=artifact.name, bytes=artifact.bytes, kind=kind)
        return self.run_dir / artifact.path

    # -- internals: steps --------------------------------------------------------------------

    def _end_step(self, name: str | None, status: StepStatus, reason: str | None) -> StepRecord:
        record = self._require()
        with self._lock:
            step = record.step(name) if name is not None else record.current_step
            if step is None or step.status is not StepStatus.RUNNING:
                label = name or "(none running)"
                raise InvalidInputError(
                    f"step {label!r} is not running; start it before ending it", step=label
                )
            self._close_step(step, status, reason)
            self._refresh_eta()
            self._persist()
        verb = "completed" if status is StepStatus.COMPLETED else status.value
        self.view.event(
            f"[{record.run_id}] Step {record.position(step)}/{record.steps_total}: {step.label} "
            f"{verb} in {step.duration_s:.1f} s" + (f" ({reason})" if reason else "")
        )
        self._refresh_view()
        self._flush_mirrors()
        return step

    def _close_step(self, step: StepRecord, status: StepStatus, reason: str | None) -> None:
        started = self._step_started.get(step.name, self._run_started)
        step.status = status
        step.reason = reason
        step.ended_at = utc_iso(self.clock.now())
        step.duration_s = round(self.clock.monotonic() - started, 3)
        if status is StepStatus.COMPLETED and step.units_total and not step.units_done:
            step.units_done = step.units_total
        self._event(
            f"step.{status.value}", step=step.name, duration_s=step.duration_s, reason=reason
        )

    def _wait_child(
        self, child: subprocess.Popen[bytes], step: StepRecord, progress_file: Path
    ) -> int:
        while True:
            try:
                return child.wait(timeout=CHILD_POLL_S)
            except subprocess.TimeoutExpired:
                self._read_progress(step, progress_file)

    def _read_progress(self, step: StepRecord, progress_file: Path) -> None:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            data = json.loads(progress_file.read_bytes())
            if data.get("total"):
                step.units_total = float(data["total"])
            step.units_done = float(data["done"])

    def _stop_child(self) -> None:
        child = self._child
        if child is None:
            return
        if child.poll() is None:
            _signal_group(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=CHILD_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(child.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=CHILD_GRACE_S)
        _signal_group(child.pid, signal.SIGKILL)  # leftovers of the step's group
        record = self._require()
        for step in record.steps:
            if step.pid == child.pid:
                step.exit_code = child.returncode
        self._event("step.process_stopped", pid=child.pid, exit_code=child.returncode)

    # -- internals: persistence --------------------------------------------------------------

    def _require(self) -> RunRecord:
        if self.record is None:
            raise InvalidInputError("the run has not started; use `with RunTracker(...)` first")
        return self.record

    def _open_index(self) -> RunIndex | None:
        try:
            return RunIndex.open(self.home, clock=self.clock)
        except (sqlite3.Error, AtomlabError) as exc:
            _log.warning("runs.index_unavailable", error=str(exc))
            return None

    def _persist(self, *, fsync: bool = False, index: bool = False) -> None:
        """Replace ``run.json``; also update the index at start, heartbeats and the end only,
        so step transitions of many parallel runs never queue on the shared index."""
        record = self._require()
        save_run(record, fsync=fsync)
        if index and self.index is not None:
            try:
                self.index.upsert(record)
            except sqlite3.Error as exc:  # run.json stays the truth; `runs reindex` repairs
                _log.warning("runs.index_write_failed", run_id=record.run_id, error=str(exc))

    def _event(self, name: str, **fields: Any) -> None:
        if self._events is not None:
            payload = {"t": utc_iso(self.clock.now()), "event": name}
            payload.update({k: v for k, v in fields.items() if v is not None})
            self._events.append(payload)

    def _retain(self) -> None:
        if self.index is None:
            return
        try:
            self.index.reap(stale_after_s=self.settings.stale_after_s)
            keep = self.settings.retention_runs
            removed = self.index.prune(keep=keep) if keep is not None else []
        except (sqlite3.Error, OSError) as exc:
            _log.warning("runs.retention_failed", error=str(exc))
            return
        if removed:
            self._event("runs.pruned", runs=removed)

    def _refresh_eta(self) -> None:
        record = self._require()
        current = record.current_step
        elapsed = None
        if current is not None and current.name in self._step_started:
            elapsed = self.clock.monotonic() - self._step_started[current.name]
        record.eta = estimate_remaining(
            record.steps, history=self._history, current_elapsed_s=elapsed
        )

    def _close_files(self) -> None:
        for appender in (self._events, self._telemetry):
            if appender is not None:
                appender.fsync()
                appender.close()
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._gpu is not None:
            self._gpu.close()
        for mirror in self._mirrors:
            with contextlib.suppress(Exception):
                mirror.close()
        if self.index is not None:
            self.index.close()
        if self._run_lock is not None:
            self._run_lock.release()  # last: the lock says "alive" until everything is written

    # -- internals: monitor ------------------------------------------------------------------

    def _monitor(self) -> None:
        period = min(MONITOR_TICK_S, self.settings.telemetry_interval_s)
        next_tick = time.monotonic() + period
        while not self._stop.is_set():
            timeout = next_tick - time.monotonic()
            if self._watch.active:
                received = self._watch.wait(timeout)
            else:
                self._stop.wait(max(timeout, 0.0))
                received = []
            if self._stop.is_set():
                break
            handled = [s for s in received if s in HANDLED_SIGNALS]
            if handled:
                self._watchdog(handled[0])
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + period
                try:
                    self.tick()
                except Exception as exc:  # the monitor must never take the run down
                    _log.warning("runs.monitor_error", error=str(exc))

    def _watchdog(self, signum: int) -> None:
        """Record the cancellation from here if the main thread has not within the grace time
        (it is stuck in a long call that releases the GIL, so its handler cannot run yet)."""
        if self._stop.wait(WATCHDOG_GRACE_S) or self._finishing:
            return
        child = self._child
        if child is not None and child.poll() is None:
            _signal_group(child.pid, signum)
        record = self._require()
        name = _signal_name(signum)
        acquired = self._lock.acquire(timeout=WATCHDOG_GRACE_S)
        try:
            if self._finishing or not record.status.is_active:
                return
            now = utc_iso(self.clock.now())
            reason = f"received {name} while the main thread was busy"
            for step in record.steps:
                if step.status is StepStatus.RUNNING:
                    self._close_step(step, StepStatus.CANCELLED, reason)
            record.status = RunStatus.CANCELLED
            record.reason = reason
            record.ended_at = now
            record.exit_signal = name
            record.eta.remaining_s = None
            self._persist(fsync=True, index=True)
            self._event("run.cancelled", reason=reason, recorded_by="monitor")
        finally:
            if acquired:
                self._lock.release()

    def tick(self) -> None:
        """One monitor pass: sample if due, heartbeat if due, refresh the view."""
        now = self.clock.monotonic()
        if self._sampler is not None and now >= self._next_sample:
            self._next_sample = now + self.settings.telemetry_interval_s
            self._take_sample()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.settings.heartbeat_interval_s
            self._heartbeat()
        self.view.update(self.progress_state())

    def _take_sample(self) -> None:
        if self._sampler is None or self._telemetry is None:
            return
        current = self._require().current_step
        sample = self._sampler.sample(step=current.name if current else None)
        self._telemetry.append(sample)
        self._samples.append(_slim(sample))
        for mirror in self._mirrors:
            with contextlib.suppress(Exception):
                mirror.add_sample(sample)

    def _take_final_sample(self) -> None:
        with contextlib.suppress(Exception):
            self._take_sample()

    def _heartbeat(self) -> None:
        record = self._require()
        with self._lock:
            if not record.status.is_active:
                return
            record.heartbeat_at = utc_iso(self.clock.now())
            self._refresh_eta()
            self._persist(index=True)

    def progress_state(self) -> ProgressState:
        record = self._require()
        with self._lock:
            self._refresh_eta()
            current = record.current_step
            step_elapsed = None
            if current is not None and current.name in self._step_started:
                step_elapsed = self.clock.monotonic() - self._step_started[current.name]
            done_or_current = current or next(
                (s for s in reversed(record.steps) if s.status is StepStatus.COMPLETED), None
            )
            return ProgressState(
                run_id=record.run_id,
                pipeline=record.pipeline,
                position=record.position(done_or_current) if done_or_current else 0,
                total=record.steps_total,
                step=current.label if current else None,
                step_elapsed_s=step_elapsed,
                run_elapsed_s=self.clock.monotonic() - self._run_started,
                eta=record.eta.model_copy(),
                fraction=current.fraction if current else None,
            )

    def _refresh_view(self) -> None:
        """Redraw a live (terminal) view at once; log-line views keep their own rhythm."""
        if getattr(self.view, "live", False):
            self.view.update(self.progress_state())

    def _flush_mirrors(self) -> None:
        record = self._require()
        for mirror in self._mirrors:
            with contextlib.suppress(Exception):
                mirror.add_steps(record)
                mirror.flush()

    def _summarise(self) -> None:
        record = self._require()
        record.summary.update(summarise_samples(self._samples))
        record.summary["throughput"] = run_throughput(record)
        baseline, runs = (None, 0)
        if self.index is not None:
            with contextlib.suppress(sqlite3.Error):
                baseline, runs = self.index.throughput_baseline(
                    self.pipeline, exclude=record.run_id
                )
        record.summary["throughput_baseline"] = baseline
        record.recommendations = recommend.evaluate(
            recommend.RuleInput(
                record=record,
                samples=self._samples,
                step_history=self._history,
                throughput_baseline=baseline,
                baseline_runs=runs,
            )
        )
        self._flush_mirrors()

    # -- internals: signals ------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            _log.info("runs.signals_not_installed", reason="tracker not on the main thread")
            return
        for signum in HANDLED_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        self._watch.install()

    def _restore_signal_handlers(self) -> None:
        self._watch.uninstall()  # after the monitor thread has stopped reading the pipe
        for signum, handler in self._previous_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signal is None:
            self._signal = signum
        child = self._child
        if child is not None and child.poll() is None:
            _signal_group(child.pid, signum)
        if not self._finishing:
            raise RunCancelled(signum)


def summarise_samples(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregates of a run's telemetry for its summary (means and peaks)."""
    if not samples:
        return {"telemetry_samples": 0}

    def values(key: str) -> list[float]:
        return [float(s[key]) for s in samples if s.get(key) is not None]

    def mean(key: str) -> float | None:
        v = values(key)
        return round(sum(v) / len(v), 1) if v else None

    def peak(key: str) -> float | None:
        v = values(key)
        return round(max(v), 1) if v else None

    return {
        "telemetry_samples": len(samples),
        "mean_run_cpu_pct": mean("proc_cpu_pct"),
        "mean_system_cpu_pct": mean("sys_cpu_pct"),
        "peak_run_rss_mb": peak("proc_rss_mb"),
        "peak_system_memory_pct": peak("sys_mem_pct"),
        "peak_processes": peak("proc_count"),
        "mean_gpu_util_pct": mean("gpu_util_pct"),
    }


def run_throughput(record: RunRecord) -> float | None:
    """Units of work per second over completed steps (a step without units counts as one)."""
    done = [s for s in record.steps if s.status is StepStatus.COMPLETED and s.duration_s]
    seconds = sum(s.duration_s or 0.0 for s in done)
    if not done or seconds <= 0:
        return None
    units = sum((s.units_done or s.units_total or 1.0) for s in done)
    return round(units / seconds, 6)


def _slim(sample: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the rules and the summary need, so memory stays small over long runs."""
    keep = (
        "dt_s",
        "step",
        "proc_cpu_pct",
        "proc_cpu_norm_pct",
        "proc_rss_mb",
        "proc_count",
        "sys_cpu_pct",
        "sys_mem_pct",
    )
    slim = {key: sample.get(key) for key in keep}
    gpus = sample.get("gpus") or []
    utils = [g["util_pct"] for g in gpus if g.get("util_pct") is not None]
    if gpus:
        slim["gpus"] = [{"util_pct": u} for u in utils]
        slim["gpu_util_pct"] = sum(utils) / len(utils) if utils else None
    return slim


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AtomlabError):
        return exc.message
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _tail_text(path: Path, lines: int) -> str:
    with contextlib.suppress(OSError):
        data = path.read_bytes()[-16_384:]
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
    return ""


__all__ = [
    "ENV_PROGRESS_FILE",
    "ENV_RUN_DIR",
    "ENV_RUN_ID",
    "ENV_STEP",
    "RunCancelled",
    "RunTracker",
    "StepFailedError",
    "report_progress",
    "run_throughput",
    "summarise_samples",
]
