"""Recordings for the learning tests: the real monitor and guard on an in-process simulator.

``record_run`` is the collect step on a fake clock: the trajectory :class:`Monitor` polls a
:class:`LoopbackNanonis` through :class:`InstrumentSource` into a real SQLite database while an
operator (the scripted expert, or one that never acts) sends guarded commands; the guard's
listener feeds the monitor, so the commands land as ``command`` action events. A 20 s run takes a
fraction of a second and is the same every time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from atomlab.instrument import NanonisClient, WriteGuard
from atomlab.learning.actions import ACTIONS, KEEP_SCANNING
from atomlab.learning.actuation import (
    GuardedInstrument,
    perform,
    prepare_instrument,
    quiet_frame_centre,
)
from atomlab.learning.episode import default_catalog
from atomlab.learning.expert import ScriptedExpert
from atomlab.learning.observation import recent_pulses
from atomlab.learning.recording import CommandRecord, Recording
from atomlab.learning.task import TaskConfig, TipTimeline
from atomlab.sim import Disturbances, LoopbackNanonis
from atomlab.trajectory import (
    InstrumentSource,
    Monitor,
    MonitorConfig,
    OwnWrites,
    Record,
    Sample,
    open_store,
)

FAST_TASK = TaskConfig(tip_change_rate_per_s=0.5, episode_s=12.0)
"""Tip changes every 2 s on average: short runs still hold several operator actions."""


@dataclass
class RecordedRun:
    run_name: str
    decisions: list[tuple[float, int]] = field(default_factory=list)
    """(dt_s, table index) of every decision the operator made, as the operator saw them."""
    live: Recording | None = None
    """The same samples and commands, collected as the monitor emitted them."""


def record_run(
    db_path: Path,
    run_name: str,
    *,
    seed: int,
    duration_s: float = 12.0,
    task: TaskConfig = FAST_TASK,
    acts: bool = True,
    signals: tuple[str, ...] | None = None,
) -> RecordedRun:
    loop = LoopbackNanonis.create(
        seed=seed,
        loop_rate_hz=task.loop_rate_hz,
        disturbances=Disturbances(tip_change_rate_per_s=task.tip_change_rate_per_s),
    )
    client = cast(NanonisClient, loop)
    catalog = default_catalog()
    guard = WriteGuard(client, catalog, allow_writes=True, clock=loop.clock, who="test-operator")
    instrument = GuardedInstrument(guard)
    prepare_instrument(instrument, centre=quiet_frame_centre(loop.physics.surface))
    own = OwnWrites()
    guard.add_listener(own.observe)
    operator = _Operator(loop, instrument, task, duration_s, acts, signals or task.signals)
    config = MonitorConfig(
        run_name=run_name,
        signals=signals or task.signals,
        specs=task.specs,
        interval_s=task.monitor_interval_s,
    )
    with open_store(db_path, read_only=False) as store:
        monitor = Monitor(
            InstrumentSource(client, catalog),
            config,
            store,
            clock=loop.clock,
            own_writes=own,
            on_record=operator.on_record,
        )
        monitor.run(duration_s=duration_s)
    return RecordedRun(run_name, operator.decisions, operator.live)


class _Operator:
    """Decides once per window, right after the monitor's sample, like the collect step's
    expert (privileged: it reads the simulator's events); or only keeps scanning."""

    def __init__(
        self,
        loop: LoopbackNanonis,
        instrument: GuardedInstrument,
        task: TaskConfig,
        duration_s: float,
        acts: bool,
        signals: tuple[str, ...],
    ) -> None:
        self.signals = signals
        self.loop = loop
        self.instrument = instrument
        self.task = task
        self.duration_s = duration_s
        self.acts = acts
        self.expert = ScriptedExpert()
        self.timeline = TipTimeline(loop.clock.monotonic())
        self.seen = 0
        self.origin = 0.0
        self.next = task.decision_interval_s
        self.commands: list[CommandRecord] = []
        self.decisions: list[tuple[float, int]] = []
        self.live: Recording | None = None

    def on_record(self, record: Record) -> None:
        if not isinstance(record, Sample):
            return
        now = self.loop.clock.monotonic()
        if self.live is None:
            self.live = Recording(self.signals, self.task.specs)
            self.origin = now - record.dt_s
        self.live.add_sample(record.dt_s, record.signals, record.specs)
        window = self.task.decision_interval_s
        now_rel = now - self.origin
        if now_rel < self.next - 1e-9 or now_rel + window > self.duration_s:
            return
        events = list(self.loop.physics.events)
        self.timeline.extend((e.t_s, e.kind) for e in events[self.seen :])
        self.seen = len(events)
        action = KEEP_SCANNING
        if self.acts:
            pulses = recent_pulses(self.commands, now_rel, window_s=window)
            action = self.expert.act(self.timeline.status_at(now), pulses, now)
        for name, args in perform(self.instrument, ACTIONS[action]):
            self.commands.append(CommandRecord(now_rel, name, args))
            self.live.add_command(now_rel, name, args)
        self.decisions.append((now_rel, action))
        self.next = self.loop.clock.monotonic() - self.origin + window


@pytest.fixture
def recorder(tmp_path: Path) -> Callable[..., RecordedRun]:
    """``recorder(run_name, seed=..., ...)`` records into ``tmp_path / 'trajectories.sqlite'``."""

    def record(run_name: str, **kwargs: object) -> RecordedRun:
        return record_run(tmp_path / "trajectories.sqlite", run_name, **kwargs)  # type: ignore[arg-type]

    return record
