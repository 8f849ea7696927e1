"""One episode of the task on an in-process simulator: act, record as the monitor would, score.

The simulator is a :class:`~atomlab.sim.LoopbackNanonis` on a fake clock (a simulated minute in
tens of milliseconds). Actions go through a :class:`~atomlab.instrument.WriteGuard` exactly as in
the ``collect`` step; the recording is made by the trajectory monitor's own
:class:`~atomlab.trajectory.InstrumentSource` (signals by name, specs by label, float32 as on the
wire) on the monitor's schedule; the observation is :func:`~atomlab.learning.observation.observe`
of that recording. Only :meth:`tip_status` (for the expert) and the score read the simulator's
ground truth::

    episode = SimulatedEpisode(task=TaskConfig(), seed=7)
    while not episode.done:
        episode.step(policy(episode.observation()))
    episode.stats.score
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final, cast

import numpy as np
from numpy.typing import NDArray

from atomlab.core.errors import PolicyRefusedError
from atomlab.instrument import Catalog, InstrumentError, NanonisClient, WriteGuard, load_catalog
from atomlab.learning.actions import ACTIONS, KEEP_SCANNING
from atomlab.learning.actuation import (
    GuardedInstrument,
    perform,
    prepare_instrument,
    quiet_frame_centre,
)
from atomlab.learning.expert import ScriptedExpert
from atomlab.learning.observation import observe, recent_pulses
from atomlab.learning.recording import Recording
from atomlab.learning.task import (
    EpisodeStats,
    Slot,
    TaskConfig,
    TipStatus,
    TipTimeline,
    slot_reward,
)
from atomlab.sim import Disturbances, LoopbackNanonis
from atomlab.trajectory import InstrumentSource

_EPS: Final = 1e-9
ENV_WHO: Final = "atomlab-learn-env"


@functools.lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    return load_catalog()


@dataclass(frozen=True)
class StepResult:
    reward: float
    done: bool
    refused: bool
    slot: Slot


class SimulatedEpisode:
    """A seeded episode; :meth:`step` takes a table index and runs one decision window."""

    def __init__(self, *, task: TaskConfig, seed: int, catalog: Catalog | None = None) -> None:
        self.task = task
        self.seed = seed
        self._sim = LoopbackNanonis.create(
            seed=seed,
            loop_rate_hz=task.loop_rate_hz,
            disturbances=Disturbances(tip_change_rate_per_s=task.tip_change_rate_per_s),
        )
        self._clock = self._sim.clock
        client = cast(NanonisClient, self._sim)  # the client API, answered in-process
        catalog = catalog or default_catalog()
        guard = WriteGuard(client, catalog, allow_writes=True, clock=self._clock, who=ENV_WHO)
        self._instrument = GuardedInstrument(guard)
        prepare_instrument(self._instrument, centre=quiet_frame_centre(self._sim.physics.surface))
        self._source = InstrumentSource(client, catalog)
        signals, specs = self._source.channels(task.signals, task.specs)
        self.recording = Recording([c.label for c in signals], [c.label for c in specs])
        self._origin = self._clock.monotonic()
        self._timeline = TipTimeline(self._origin)
        self._events_seen = len(self._sim.physics.events)
        self._tick = 0
        self.stats = EpisodeStats(seed=seed, crash_penalty=task.crash_penalty)
        self.refused = 0
        self.done = False
        self._record_until(task.decision_interval_s)

    # --- what a policy may use ---------------------------------------------------------------

    @property
    def now_s(self) -> float:
        """Seconds since the recording started (the monitor's ``dt_s``)."""
        return self._clock.monotonic() - self._origin

    def observation(self) -> NDArray[np.float32]:
        return observe(self.recording, self.now_s, window_s=self.task.decision_interval_s)

    def recent_pulses(self) -> int:
        return recent_pulses(
            self.recording.commands, self.now_s, window_s=self.task.decision_interval_s
        )

    # --- privileged ----------------------------------------------------------------------------

    def tip_status(self) -> TipStatus:
        """The simulator's ground truth about the tip now: for the expert and the score only.
        ``since_s`` is on :attr:`clock_s`'s clock."""
        self._read_events()
        return self._timeline.status_at(self._clock.monotonic())

    @property
    def simulator(self) -> LoopbackNanonis:
        """The in-process simulator itself (ground truth): for scoring, tests and benchmarks,
        never for a learner."""
        return self._sim

    @property
    def clock_s(self) -> float:
        """The simulator's clock (what :meth:`tip_status` times are measured on)."""
        return self._clock.monotonic()

    def expert_action(self, expert: ScriptedExpert) -> int:
        """What ``expert`` does now, knowing the tip state."""
        return expert.act(self.tip_status(), self.recent_pulses(), self.clock_s)

    # --- stepping ------------------------------------------------------------------------------

    def step(self, action: int) -> StepResult:
        if self.done:
            raise RuntimeError("the episode is over; start a new one")
        table = ACTIONS[action]
        start_rel, start_abs = self.now_s, self._clock.monotonic()
        refused = False
        try:
            for command, args in perform(self._instrument, table):
                self.recording.add_command(start_rel, command, args)
        except (PolicyRefusedError, InstrumentError):
            refused = True  # the guard or the instrument said no: nothing happened
            self.refused += 1
        end_rel = self.now_s + self.task.decision_interval_s
        self._record_until(end_rel)
        self._read_events()
        end_abs = self._clock.monotonic()
        slot = Slot(
            start_s=start_abs,
            end_s=end_abs,
            action=action,
            good=action == KEEP_SCANNING and self._timeline.healthy_throughout(start_abs, end_abs),
            crashes=self._timeline.crashes_between(start_abs, end_abs),
        )
        self.stats.add_slot(slot, self.task.decision_interval_s)
        self.done = end_rel >= self.task.episode_s - _EPS
        if self.done:
            self._finish()
        reward = slot_reward(slot, crash_penalty=self.task.crash_penalty)
        return StepResult(reward=reward, done=self.done, refused=refused, slot=slot)

    def _record_until(self, end_rel: float) -> None:
        """Poll on the monitor's schedule up to (not including) ``end_rel``, then move the clock
        there. Ticks that a waiting command jumped over are missed, as a busy monitor's are."""
        interval = self.task.monitor_interval_s
        while True:
            tick_rel = self._tick * interval
            if tick_rel >= end_rel - _EPS:
                break
            self._tick += 1
            now_rel = self.now_s
            if tick_rel < now_rel - _EPS:
                continue
            self._clock.advance(max(0.0, tick_rel - now_rel))
            signals, specs = self._source.poll()
            self.recording.add_sample(tick_rel, signals, specs)
        self._clock.advance(max(0.0, end_rel - self.now_s))

    def _read_events(self) -> None:
        events = self._sim.physics.events
        fresh = list(events)[self._events_seen :] if len(events) > self._events_seen else []
        self._events_seen = len(events)
        self._timeline.extend((e.t_s, e.kind) for e in fresh)

    def _finish(self) -> None:
        end = self._clock.monotonic()
        self.stats.recoveries_s = [b - a for a, b in self._timeline.damage_periods(end)]
        if not all(math.isfinite(r) for r in self.stats.recoveries_s):
            raise AssertionError("recovery times must be finite")
