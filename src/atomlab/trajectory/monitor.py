"""The recording loop: poll a :class:`Source` on a fixed schedule and send records to the store.

Timing model: one monotonic origin per run; tick ``k`` is scheduled at ``origin + k·interval``.
A tick that cannot start within half an interval of its schedule is recorded as missed (never
made up in a burst). ``dt_s`` is the real time the poll started, measured from the origin.
Records go to a background batch writer; a poll error is recorded and the loop reconnects with
back-off while the schedule keeps running::

    monitor = Monitor(source, config, store)
    summary = monitor.run(duration_s=60)       # or max_samples=...; monitor.stop() from elsewhere
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Protocol

from atomlab.core.clock import Clock, SystemClock, utc_iso
from atomlab.core.errors import AtomlabError, ConnectionFailedError
from atomlab.core.logging import get_logger
from atomlab.trajectory.actions import (
    AUDIT_LOG_ATTRIBUTION_GRACE_S,
    DEFAULT_ATTRIBUTION_GRACE_S,
    ActionDetector,
    OwnWrites,
)
from atomlab.trajectory.config import MonitorConfig
from atomlab.trajectory.records import (
    ActionEvent,
    ChannelInfo,
    LeaseRenewal,
    MissedTicks,
    MissReason,
    MonitorError,
    Record,
    RunAnchor,
    RunStatus,
    Sample,
    Value,
)
from atomlab.trajectory.store import COMMIT_FRACTION, LEASE_RENEW_S, RunInfo, TrajectoryStore

#: A tick may start this fraction of an interval after its schedule; later, it is missed.
LATE_FRACTION = 0.5
RECONNECT_INITIAL_DELAY_S = 0.2
RECONNECT_MAX_DELAY_S = 10.0
#: On the real clock, wake this long before a tick and spin for the rest (sleep overshoots).
SPIN_S = 0.0008
#: Longest single sleep, so a stop request is noticed promptly even with long intervals.
MAX_SLEEP_SLICE_S = 0.25
#: Sample times kept to place a guarded command (reported after its reply) on the sample axis.
SAMPLE_TIMES_KEPT = 65_536
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionFailedError,
    ConnectionError,
    TimeoutError,
    OSError,
)

_log = get_logger("atomlab.trajectory.monitor")


class Source(Protocol):
    """What the monitor reads. :class:`~atomlab.trajectory.source.InstrumentSource` is the real one.

    ``channels`` resolves labels once per run; ``poll`` then reads every signal and spec once,
    returning values in the order of the channels.
    """

    def channels(
        self, signals: Sequence[str], specs: Sequence[str]
    ) -> tuple[list[ChannelInfo], list[ChannelInfo]]: ...

    def identity(self) -> dict[str, Any]: ...

    def poll(self) -> tuple[Sequence[Value], Sequence[Value]]: ...

    def reconnect(self) -> None: ...


@dataclass(frozen=True)
class RunSummary:
    """What a finished recording did; printed by ``atomlab trajectory monitor run``."""

    run_id: int
    run_name: str
    db_path: str
    status: RunStatus
    stop_reason: str
    started_at_utc: str
    ended_at_utc: str
    duration_s: float
    samples: int
    actions: int
    errors: int
    missed_ticks: int
    reconnects: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Monitor:
    """Records one run of ``config`` from ``source`` into ``store`` (inference only: never writes).

    ``own_writes`` tags actions that match writes made through atomlab's guard as ``self``.
    ``on_record`` sees every record after it is queued (a live console, metrics); ``on_start``
    sees the run row once it exists (the CLI consumes the staged run name there).
    """

    def __init__(
        self,
        source: Source,
        config: MonitorConfig,
        store: TrajectoryStore,
        *,
        clock: Clock | None = None,
        own_writes: OwnWrites | None = None,
        on_record: Callable[[Record], None] | None = None,
        on_start: Callable[[RunInfo], None] | None = None,
        spin_s: float | None = None,
        attribution_grace_s: float | None = None,
    ) -> None:
        config.require_runnable()
        self.source = source
        self.config = config
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.own_writes = own_writes
        self._on_record = on_record
        self._on_start = on_start
        self._grace_s = attribution_grace_s
        self._spin_s = (
            (SPIN_S if isinstance(self.clock, SystemClock) else 0.0) if spin_s is None else spin_s
        )
        self._stop = threading.Event()
        self._sample_dts: list[float] = []
        self._first_kept_idx = 0
        self._stop_status: RunStatus = "completed"
        self._stop_reason = ""
        self.counts = {"samples": 0, "actions": 0, "errors": 0, "missed_ticks": 0, "reconnects": 0}

    def stop(self, status: RunStatus = "completed", reason: str = "stopped") -> None:
        """Ask the loop to end after the current tick (safe from signal handlers and threads)."""
        if not self._stop.is_set():
            self._stop_status = status
            self._stop_reason = reason
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, duration_s: float | None = None, max_samples: int | None = None) -> RunSummary:
        """Record until ``duration_s`` passes, ``max_samples`` are taken or :meth:`stop` is called.

        Returns the run's summary; the run row is finished (status, end time) in every case.
        """
        cfg = self.config
        signals, specs = self.source.channels(cfg.signals, cfg.specs)
        started, started_mono = self.clock.now(), self.clock.monotonic()
        run = self.store.create_run(
            cfg,
            signals=signals,
            specs=specs,
            instrument=self.source.identity(),
            started_at_utc=utc_iso(started),
        )
        if self._on_start is not None:
            self._on_start(run)
        # A batch is committed when it holds the ticks of half a flush interval (or after that
        # time): the other half is the margin that keeps kill -9 losses within one interval.
        ticks_per_flush = max(1, int(cfg.flush_interval_s * COMMIT_FRACTION / cfg.interval_s))
        writer = self.store.record_writer(
            run,
            n_signals=len(signals),
            n_specs=len(specs),
            flush_interval_s=cfg.flush_interval_s,
            max_batch=ticks_per_flush,
        )
        detector = ActionDetector(
            [s.label for s in specs],
            tolerances=cfg.tolerances,
            action_window_s=cfg.action_window_s,
            coalesce_s=cfg.coalesce_s,
            own_writes=self.own_writes,
            attribution_grace_s=self._attribution_grace_s(),
        )
        status: RunStatus = "failed"
        reason = "the recorder failed"
        origin = self.clock.monotonic()
        started += timedelta(seconds=origin - started_mono)  # the wall time of dt_s = 0
        heartbeat = _Heartbeat(writer.put)
        try:
            writer.put(RunAnchor(utc_iso(started)))  # stored by the writer: the loop never waits
            heartbeat.start()
            self._loop(origin, writer.put, detector, duration_s, max_samples)
            self._take_commands(origin, detector, writer.put, self.counts["samples"])
            detector.finish(lambda event: self._emit(writer.put, event))
            status, reason = self._stop_status, self._stop_reason or "finished"
        except KeyboardInterrupt:
            status, reason = "interrupted", "interrupted by the operator"
            raise
        finally:
            heartbeat.stop()
            try:
                writer.close()
            finally:
                ended = self.clock.now()
                self.store.finish_run(
                    run.id,
                    status=status,
                    ended_at_utc=utc_iso(ended),
                    reason=reason,
                    started_at_utc=utc_iso(started),
                )
        return RunSummary(
            run_id=run.id,
            run_name=run.name,
            db_path=str(self.store.path),
            status=status,
            stop_reason=reason,
            started_at_utc=utc_iso(started),
            ended_at_utc=utc_iso(ended),
            duration_s=round(self.clock.monotonic() - origin, 6),
            **self.counts,
        )

    def _attribution_grace_s(self) -> float:
        if self._grace_s is not None:
            return self._grace_s
        base = max(DEFAULT_ATTRIBUTION_GRACE_S, 2 * self.config.interval_s)
        if self.own_writes is not None and self.own_writes.follows_audit_logs:
            return max(base, AUDIT_LOG_ATTRIBUTION_GRACE_S)
        return base

    # ------------------------------------------------------------------ the loop

    def _loop(
        self,
        origin: float,
        put: Callable[[Record], None],
        detector: ActionDetector,
        duration_s: float | None,
        max_samples: int | None,
    ) -> None:
        interval = self.config.interval_s
        late_s = interval * LATE_FRACTION
        tick = 0
        sample_idx = 0
        while not self._stop.is_set():
            if max_samples is not None and sample_idx >= max_samples:
                self.stop("completed", f"took {max_samples} samples")
                break
            scheduled = origin + tick * interval
            if duration_s is not None and tick * interval >= duration_s:
                self.stop("completed", f"recorded for {duration_s} s")
                break
            now = self.clock.monotonic()
            if now - scheduled > late_s:
                resume = max(tick + 1, math.ceil((now - late_s - origin) / interval))
                self._missed(put, tick, resume - tick, origin, now, "late")
                tick = resume
                continue
            self._wait_until(scheduled)
            if self._stop.is_set():
                break
            t0 = self.clock.monotonic()
            try:
                signals, specs = self.source.poll()
            except Exception as exc:
                tick = self._recover(put, exc, tick, origin)
                continue
            t1 = self.clock.monotonic()
            sample = Sample(
                sample_idx=sample_idx,
                tick_idx=tick,
                dt_s=t0 - origin,
                scheduled_dt_s=tick * interval,
                latency_s=t1 - t0,
                signals=tuple(signals),
                specs=tuple(specs),
            )
            self._queue(put, sample, "samples")
            self._remember_sample(sample.dt_s)
            detector.observe(
                sample_idx=sample_idx,
                dt_s=sample.dt_s,
                at_utc=utc_iso(self.clock.now()),
                at_monotonic=t0,
                values=sample.specs,
                emit=lambda event: self._emit(put, event),
            )
            sample_idx += 1
            tick += 1
            self._take_commands(origin, detector, put, sample_idx)

    def _remember_sample(self, dt_s: float) -> None:
        self._sample_dts.append(dt_s)
        if len(self._sample_dts) > 2 * SAMPLE_TIMES_KEPT:
            del self._sample_dts[:SAMPLE_TIMES_KEPT]
            self._first_kept_idx += SAMPLE_TIMES_KEPT

    def _take_commands(
        self,
        origin: float,
        detector: ActionDetector,
        put: Callable[[Record], None],
        next_sample_idx: int,
    ) -> None:
        """Turn guarded commands reported since the last tick into ``command`` actions."""
        if self.own_writes is None:
            return
        for command in self.own_writes.take_commands():
            dt_s = command.at_monotonic - origin
            if dt_s + command.duration_s < 0:
                continue  # sent and answered before this run started
            # The first sample polled at or after the command was sent.
            k = bisect.bisect_left(self._sample_dts, dt_s)
            idx = self._first_kept_idx + k if self._sample_dts else next_sample_idx
            detector.command(
                command,
                sample_idx=min(idx, next_sample_idx),
                dt_s=dt_s,
                emit=lambda event: self._emit(put, event),
            )

    def _wait_until(self, target: float) -> None:
        while not self._stop.is_set():
            remaining = target - self.clock.monotonic()
            if remaining <= self._spin_s:
                break
            self.clock.sleep(min(remaining - self._spin_s, MAX_SLEEP_SLICE_S))
        while self.clock.monotonic() < target and not self._stop.is_set():
            pass  # spin: sleep() wakes up to ~1 ms late, which is the jitter we refuse

    def _emit(self, put: Callable[[Record], None], event: ActionEvent) -> None:
        self._queue(put, event, "actions")

    def _queue(self, put: Callable[[Record], None], record: Record, counter: str) -> None:
        put(record)
        self.counts[counter] += 1
        if self._on_record is not None:
            self._on_record(record)

    def _missed(
        self,
        put: Callable[[Record], None],
        first_tick: int,
        count: int,
        origin: float,
        now: float,
        reason: MissReason,
    ) -> None:
        if count <= 0:
            return
        record = MissedTicks(
            first_tick_idx=first_tick,
            count=count,
            scheduled_dt_s=first_tick * self.config.interval_s,
            detected_dt_s=now - origin,
            reason=reason,
        )
        put(record)
        self.counts["missed_ticks"] += count
        if self._on_record is not None:
            self._on_record(record)

    def _error(self, put: Callable[[Record], None], exc: BaseException, dt_s: float) -> None:
        details: Mapping[str, Any] = exc.details if isinstance(exc, AtomlabError) else {}
        record = MonitorError(
            dt_s=dt_s,
            at_utc=utc_iso(self.clock.now()),
            error_type=type(exc).__name__,
            message=str(exc) or repr(exc),
            command=str(details.get("command", "")),
            details={k: v for k, v in details.items() if k != "command"},
        )
        self._queue(put, record, "errors")
        _log.warning("poll failed", error=record.message, error_type=record.error_type)

    def _recover(
        self, put: Callable[[Record], None], exc: BaseException, tick: int, origin: float
    ) -> int:
        """Record the failed poll; reconnect (with back-off) if the link broke. Next tick index."""
        self._error(put, exc, self.clock.monotonic() - origin)
        interval = self.config.interval_s
        if not isinstance(exc, CONNECTION_ERRORS):
            self._missed(put, tick, 1, origin, self.clock.monotonic(), "error")
            return tick + 1
        delay = RECONNECT_INITIAL_DELAY_S
        while not self._stop.is_set():
            try:
                self.source.reconnect()
                self.counts["reconnects"] += 1
                break
            except Exception as again:
                self._error(put, again, self.clock.monotonic() - origin)
                self._sleep_interruptibly(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_S)
        now = self.clock.monotonic()
        resume = max(tick + 1, math.ceil((now - origin) / interval))
        self._missed(put, tick, resume - tick, origin, now, "disconnected")
        return resume

    def _sleep_interruptibly(self, seconds: float) -> None:
        deadline = self.clock.monotonic() + seconds
        while not self._stop.is_set():
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                return
            self.clock.sleep(min(remaining, MAX_SLEEP_SLICE_S))


class _Heartbeat:
    """Queues a :class:`LeaseRenewal` every ``LEASE_RENEW_S`` (real time) while a run records,
    so the run's lease stays fresh even while polls fail or hang."""

    def __init__(self, put: Callable[[Record], None]) -> None:
        self._put = put
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trajectory-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(LEASE_RENEW_S):
            try:
                self._put(LeaseRenewal(), 1.0)  # type: ignore[call-arg]
            except Exception as exc:  # the writer failed or is closing: the run ends anyway
                _log.warning("lease renewal failed", error=repr(exc))
                return
