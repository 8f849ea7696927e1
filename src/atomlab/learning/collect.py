"""The ``collect`` step: the expert operates ``atomlab sim spm`` over the Nanonis protocol.

For each episode a real simulator process starts on a free port (``atomlab sim spm --port 0``,
the task's tip-change and loop rates, and ``--events-file``: the ground truth only the expert
may read). The expert talks to it through :class:`~atomlab.instrument.NanonisClient` and a
:class:`~atomlab.instrument.WriteGuard` (every pulse and tip shaping a guarded, audited command)
while the trajectory :class:`~atomlab.trajectory.Monitor` records on its own connection into the
trajectory database; the guard's listener feeds the monitor's ``OwnWrites``, so each command
becomes a ``command`` action event of the run (contract C2).

The monitor runs in this process, one thread per episode, not as ``atomlab trajectory monitor
run`` subprocesses: the guard then reports its commands to the monitor directly (the audit-log
route adds a 3 s attribution wait), the recording stops exactly when the episode ends, and the
demo's 90 s budget is not spent starting one more Python process per episode. It is the same
``Monitor`` class the CLI runs.
"""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from atomlab.core.errors import ConnectionFailedError, PolicyRefusedError
from atomlab.core.logging import get_logger
from atomlab.instrument import Catalog, NanonisClient, WriteGuard
from atomlab.learning.actions import ACTIONS
from atomlab.learning.actuation import (
    GuardedInstrument,
    perform,
    prepare_instrument,
    quiet_frame_centre,
)
from atomlab.learning.expert import ScriptedExpert
from atomlab.learning.observation import recent_pulses
from atomlab.learning.recording import CommandRecord
from atomlab.learning.task import EpisodeStats, Slot, TaskConfig, TipStatus, TipTimeline
from atomlab.sim import read_event_log
from atomlab.surface import Surface
from atomlab.trajectory import (
    InstrumentSource,
    Monitor,
    MonitorConfig,
    OwnWrites,
    Record,
    Sample,
    open_store,
)

HOST: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 60.0
"""A simulator process has this long to say it listens (a cold start on a loaded machine)."""
STOP_TIMEOUT_S: Final = 10.0
CALL_TIMEOUT_S: Final = 10.0
EXPERT_WHO: Final = "atomlab-learn-expert"
POLL_S: Final = 0.25

_log = get_logger("atomlab.learning.collect")


@dataclass
class CollectedEpisode:
    """One recorded run: what the expert did and how well (from the simulator's ground truth)."""

    run_name: str
    seed: int
    port: int
    stats: EpisodeStats
    decisions: list[tuple[float, int]] = field(default_factory=list)
    """(seconds from the run's start, table index) of every decision the expert made."""
    refused: int = 0
    monitor: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_name": self.run_name,
            "seed": self.seed,
            "port": self.port,
            "decisions": len(self.decisions),
            "refused": self.refused,
            "expert": self.stats.to_dict(),
            "monitor": self.monitor,
        }


class SimulatorProcess:
    """``atomlab sim spm`` in a child process on a free port, stopped with SIGTERM."""

    def __init__(self, *, seed: int, task: TaskConfig, events_path: Path, log_path: Path) -> None:
        self.seed = seed
        self.events_path = events_path
        self.log_path = log_path
        self.argv = [
            sys.executable,
            "-m",
            "atomlab",
            "sim",
            "spm",
            "--json",
            "--port",
            "0",
            "--seed",
            str(seed),
            "--tip-change-rate",
            repr(task.tip_change_rate_per_s),
            "--loop-rate",
            repr(task.loop_rate_hz),
            "--events-file",
            str(events_path),
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self._log: IO[str] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # our Ctrl-C is handled here; we stop the simulator
        )

    def wait_listening(self, deadline: float) -> int:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            remaining = deadline - time.monotonic()
            ready = selector.select(max(0.0, remaining)) if remaining > 0 else []
        line = proc.stdout.readline() if ready else ""
        try:
            announced = json.loads(line)
            self.port = int(announced["ports"][0])
        except (ValueError, KeyError, IndexError, TypeError):
            self.stop()
            log = self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise ConnectionFailedError(
                f"the simulator (seed {self.seed}) did not start within {START_TIMEOUT_S:g} s: "
                f"{line.strip() or log.strip() or 'no output'}",
                argv=self.argv,
            ) from None
        return self.port

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None


def collect_episodes(
    *,
    task: TaskConfig,
    expert: ScriptedExpert,
    seeds: Sequence[int],
    run_names: Sequence[str],
    episode_s: float,
    parallel: int,
    db_path: Path,
    work_dir: Path,
    catalog: Catalog,
    on_episode: Callable[[CollectedEpisode], None] | None = None,
) -> list[CollectedEpisode]:
    """Record one run per seed, ``parallel`` at a time; returns them in seed order."""
    work_dir.mkdir(parents=True, exist_ok=True)
    collected: list[CollectedEpisode] = []
    pairs = list(zip(seeds, run_names, strict=True))
    for start in range(0, len(pairs), max(1, parallel)):
        batch = pairs[start : start + max(1, parallel)]
        collected += _collect_batch(
            batch, task, expert, episode_s, db_path, work_dir, catalog, on_episode
        )
    return collected


def _collect_batch(
    batch: list[tuple[int, str]],
    task: TaskConfig,
    expert: ScriptedExpert,
    episode_s: float,
    db_path: Path,
    work_dir: Path,
    catalog: Catalog,
    on_episode: Callable[[CollectedEpisode], None] | None,
) -> list[CollectedEpisode]:
    sims = [
        SimulatorProcess(
            seed=seed,
            task=task,
            events_path=work_dir / f"{name}.events.jsonl",
            log_path=work_dir / f"{name}.sim.log",
        )
        for seed, name in batch
    ]
    stop = threading.Event()
    try:
        for sim in sims:  # start them all, then wait: they boot in parallel
            sim.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        for sim in sims:
            sim.wait_listening(deadline)
        sessions = [
            _ExpertSession(
                sim=sim,
                run_name=name,
                task=task,
                expert=expert,
                episode_s=episode_s,
                db_path=db_path,
                audit_log=work_dir / f"{name}.audit.jsonl",
                catalog=catalog,
                stop=stop,
            )
            for sim, (_, name) in zip(sims, batch, strict=True)
        ]
        with ThreadPoolExecutor(len(sessions), thread_name_prefix="learn-expert") as pool:
            futures = [pool.submit(session.run) for session in sessions]
            try:
                _wait_all(futures)
            except BaseException:
                stop.set()
                for session in sessions:
                    session.abort()
                raise
        results = []
        for sim, session, future in zip(sims, sessions, futures, strict=True):
            sim.stop()  # the event log is complete once the simulator has stopped
            episode = session.score(future.result())
            results.append(episode)
            if on_episode is not None:
                on_episode(episode)
        return results
    finally:
        stop.set()
        for sim in sims:
            sim.stop()


def _wait_all(futures: list[Future[Any]]) -> None:
    """Wait in short slices (so the main thread handles signals), raising the first failure."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_EXCEPTION)
        for future in done:
            error = future.exception()
            if error is not None:
                raise error


@dataclass
class _Outcome:
    origin: float
    end: float
    decisions: list[tuple[float, int, float]]
    refused: int
    monitor: dict[str, Any]


class _ExpertSession:
    """One episode: set up, record, and let the expert decide every window until the end."""

    def __init__(
        self,
        *,
        sim: SimulatorProcess,
        run_name: str,
        task: TaskConfig,
        expert: ScriptedExpert,
        episode_s: float,
        db_path: Path,
        audit_log: Path,
        catalog: Catalog,
        stop: threading.Event,
    ) -> None:
        self.sim = sim
        self.run_name = run_name
        self.task = task
        self.expert = expert
        self.episode_s = episode_s
        self.db_path = db_path
        self.audit_log = audit_log
        self.catalog = catalog
        self.stop = stop
        self._monitor: Monitor | None = None
        self._origin: float | None = None
        self._started = threading.Event()

    def abort(self) -> None:
        self.stop.set()
        if self._monitor is not None:
            self._monitor.stop("interrupted", "the learning pipeline stopped")

    def run(self) -> _Outcome:
        control = NanonisClient(HOST, self.sim.port, call_timeout_s=CALL_TIMEOUT_S)
        reader = NanonisClient(HOST, self.sim.port, call_timeout_s=CALL_TIMEOUT_S)
        store = open_store(self.db_path, read_only=False)
        try:
            guard = WriteGuard(
                control, self.catalog, allow_writes=True, audit_log=self.audit_log, who=EXPERT_WHO
            )
            instrument = GuardedInstrument(guard)
            prepare_instrument(
                instrument, centre=quiet_frame_centre(Surface.generate(self.sim.seed))
            )
            own = OwnWrites()
            guard.add_listener(own.observe)  # every guarded command becomes an action event
            config = MonitorConfig(
                run_name=self.run_name,
                signals=self.task.signals,
                specs=self.task.specs,
                interval_s=self.task.monitor_interval_s,
                db_path=self.db_path,
            )
            monitor = Monitor(
                InstrumentSource(reader, self.catalog),
                config,
                store,
                own_writes=own,
                spin_s=0.0,
                on_record=self._first_sample,
            )
            self._monitor = monitor
            summary: dict[str, Any] = {}
            recorder = threading.Thread(
                target=lambda: summary.update(monitor.run(duration_s=self.episode_s).to_dict()),
                name=f"learn-monitor-{self.run_name}",
            )
            recorder.start()
            try:
                outcome = self._operate(instrument, recorder)
            finally:
                if self.stop.is_set():
                    monitor.stop("interrupted", "the learning pipeline stopped")
                recorder.join()
            if summary.get("status") not in ("completed", None) and not self.stop.is_set():
                raise ConnectionFailedError(
                    f"the trajectory monitor of {self.run_name} ended {summary.get('status')}: "
                    f"{summary.get('stop_reason')}",
                    run_name=self.run_name,
                )
            outcome.monitor = summary
            return outcome
        finally:
            store.close()
            control.close()
            reader.close()

    def _first_sample(self, record: Record) -> None:
        if self._origin is None and isinstance(record, Sample):
            self._origin = time.monotonic() - record.dt_s - record.latency_s
            self._started.set()

    def _operate(self, instrument: GuardedInstrument, recorder: threading.Thread) -> _Outcome:
        while not self._started.wait(POLL_S):
            if not recorder.is_alive() or self.stop.is_set():
                raise ConnectionFailedError(
                    f"the trajectory monitor of {self.run_name} stopped before recording",
                    run_name=self.run_name,
                )
        assert self._origin is not None
        origin = self._origin
        window = self.task.decision_interval_s
        timeline = _FollowedTimeline(self.sim.events_path, origin)
        commands: list[CommandRecord] = []
        decisions: list[tuple[float, int, float]] = []
        refused = 0
        t_next = origin + window
        end = origin + self.episode_s
        while t_next + window <= end and not self.stop.is_set():
            _sleep_until(t_next, self.stop)
            now = time.monotonic()
            status = timeline.status_at(now)
            action = self.expert.act(
                status, recent_pulses(commands, now - origin, window_s=window), now
            )
            try:
                for name, args in perform(instrument, ACTIONS[action]):
                    commands.append(CommandRecord(now - origin, name, args))
            except PolicyRefusedError as exc:
                refused += 1
                _log.warning("the guard refused the expert", error=exc.message)
            t_next = time.monotonic() + window
            decisions.append((now, action, t_next))
        return _Outcome(origin, end, decisions, refused, {})

    def score(self, outcome: _Outcome) -> CollectedEpisode:
        """The expert's task score from the simulator's complete event log."""
        timeline = TipTimeline(outcome.origin)
        timeline.extend((e.t_s, e.kind) for e in read_event_log(self.sim.events_path))
        stats = EpisodeStats(seed=self.sim.seed, crash_penalty=self.task.crash_penalty)
        for start, action, end in outcome.decisions:
            stats.add_slot(
                Slot(
                    start_s=start,
                    end_s=end,
                    action=action,
                    good=action == 0 and timeline.healthy_throughout(start, end),
                    crashes=timeline.crashes_between(start, end),
                ),
                self.task.decision_interval_s,
            )
        last = outcome.decisions[-1][2] if outcome.decisions else outcome.end
        stats.recoveries_s = [b - a for a, b in timeline.damage_periods(last)]
        return CollectedEpisode(
            run_name=self.run_name,
            seed=self.sim.seed,
            port=self.sim.port,
            stats=stats,
            decisions=[(t - outcome.origin, a) for t, a, _ in outcome.decisions],
            refused=outcome.refused,
            monitor=outcome.monitor,
        )


class _FollowedTimeline:
    """The simulator's event log, read as it grows (the expert's privileged view)."""

    def __init__(self, path: Path, origin: float) -> None:
        self.path = path
        self.timeline = TipTimeline(origin)
        self._offset = 0

    def status_at(self, t_s: float) -> TipStatus:
        self._read()
        return self.timeline.status_at(t_s)

    def _read(self) -> None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a torn last line waits for the next read
        self._offset += end
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
                self.timeline.add(float(record["t_s"]), str(record["kind"]))
            except (ValueError, KeyError, TypeError):
                continue


def _sleep_until(target: float, stop: threading.Event) -> None:
    remaining = target - time.monotonic()
    if remaining > 0:
        stop.wait(remaining)
